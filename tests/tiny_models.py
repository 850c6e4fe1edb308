"""Tiny models with exactly known outputs, for engine and backend tests.

The identity models return the S2 input unchanged and a constant gate, so a test can assert the
engine's tiling, blending and writing bit for bit, without training anything. The broken models
(corrupt, wrong spec, wrong tensor names, wrong band count) exercise the refusals that must happen
before any compute. Import it from a test as `import tiny_models` (pytest puts tests/ on sys.path).
"""
import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from sar_cloud_removal.core.model_spec import SPEC_KEY, make_spec

OPSET = 17
IR_VERSION = 8  # what onnxruntime of any recent release reads


def tiny_spec(tile_size=64, overlap=16, size_multiple=1, name="identity",
              architecture="identity", config=None) -> dict:
    """A valid spec for a small tile, so engine tests need only small rasters."""
    return make_spec(name, "0.0.1", architecture, config or {}, tile_size=tile_size,
                     overlap=overlap, size_multiple=size_multiple)


def _identity_graph(gate_value: float, input_names=("s2", "s1"), s2_channels=13,
                    shift: float = 0.0):
    """restored = s2 + `shift`; gate = `gate_value` everywhere, shaped N×1×H×W from the s1 input.

    The gate's shape comes from s1 so that both inputs are used (runtimes may drop unused ones).
    """
    s2_name, s1_name = input_names
    inputs = [helper.make_tensor_value_info(s2_name, TensorProto.FLOAT,
                                            ["N", s2_channels, "H", "W"]),
              helper.make_tensor_value_info(s1_name, TensorProto.FLOAT, ["N", 2, "H", "W"])]
    outputs = [helper.make_tensor_value_info("restored", TensorProto.FLOAT,
                                             ["N", s2_channels, "H", "W"]),
               helper.make_tensor_value_info("gate", TensorProto.FLOAT, ["N", 1, "H", "W"])]
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    gate_fill = helper.make_tensor("gate_fill", TensorProto.FLOAT, [1], [gate_value])
    shift_value = helper.make_tensor("shift", TensorProto.FLOAT, [1], [shift])
    nodes = [
        helper.make_node("Add", [s2_name, "shift"], ["restored"]) if shift
        else helper.make_node("Identity", [s2_name], ["restored"]),
        helper.make_node("Shape", [s1_name], ["batch"], start=0, end=1),
        helper.make_node("Shape", [s1_name], ["height_width"], start=2, end=4),
        helper.make_node("Concat", ["batch", "one", "height_width"], ["gate_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["gate_shape"], ["gate"], value=gate_fill),
    ]
    initializers = [one, shift_value] if shift else [one]
    return helper.make_graph(nodes, "tiny_identity", inputs, outputs, initializer=initializers)


def _save_onnx(graph, path, spec) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    if spec is not None:
        helper.set_model_props(model, {SPEC_KEY: json.dumps(spec)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def constant_gate_onnx(path, value: float, tile_size=64, overlap=16, size_multiple=1) -> Path:
    """An ONNX model that passes S2 through and outputs a gate equal to `value`."""
    return _save_onnx(_identity_graph(value), path,
                      tiny_spec(tile_size, overlap, size_multiple))


def shifted_onnx(path, gate_value: float, shift: float, tile_size=64, overlap=16,
                 keep_clear=None) -> Path:
    """restored = s2 + `shift` (on the [0, 1] scale) with a constant gate: a model that alters
    every pixel, to see which ones the engine keeps (at the spec's `keep_clear` levels, if
    given)."""
    spec = tiny_spec(tile_size, overlap)
    if keep_clear is not None:
        spec["keep_clear"] = {"none": keep_clear[0], "full": keep_clear[1]}
    return _save_onnx(_identity_graph(gate_value, shift=shift), path, spec)


def identity_onnx(path, tile_size=64, overlap=16, size_multiple=1) -> Path:
    """An ONNX model that passes S2 through with gate 1 (all clear sky)."""
    return constant_gate_onnx(path, 1.0, tile_size, overlap, size_multiple)


def identity_torch(path, tile_size=64, overlap=16, size_multiple=1) -> Path:
    """A torch checkpoint of the registry's "identity" network with a matching spec."""
    import torch

    from sar_cloud_removal.models.registry import build

    spec = tiny_spec(tile_size, overlap, size_multiple)
    torch.save({"spec": spec, "state_dict": build("identity").state_dict()}, str(path))
    return Path(path)


def onnx_with_spec(path, spec) -> Path:
    """An identity ONNX model carrying `spec` as given (None: no spec at all)."""
    return _save_onnx(_identity_graph(1.0), path, spec)


def onnx_with_input_names(path, s2_name: str, s1_name: str) -> Path:
    """An identity ONNX model whose inputs are not named as its (valid) spec says."""
    return _save_onnx(_identity_graph(1.0, input_names=(s2_name, s1_name)), path, tiny_spec())


def onnx_with_s2_channels(path, channels: int) -> Path:
    """An identity ONNX model declaring `channels` S2 bands while its spec promises 13."""
    return _save_onnx(_identity_graph(1.0, s2_channels=channels), path, tiny_spec())


def truncated_copy(source, path) -> Path:
    """The first half of a model file, as left by an interrupted download."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[:len(data) // 2])
    return Path(path)
