"""Inference backends on real ONNX Runtime and torch: exactness, agreement, refusals, fallbacks."""
import json
import os
import re
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

import tiny_models
from sar_cloud_removal.core.backends import create_backend
from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.model_spec import SPEC_KEY, load_spec, resolve_model
from sar_cloud_removal.models import registry

HAS_CUDA = {"onnxruntime": "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
            "torch": torch.cuda.is_available()}


def with_cuda(*backends):
    """The backends as test parameters, each skipped where it has no GPU to run on (marked
    `gpu`: scripts/gpu_check.sh runs them)."""
    return [pytest.param(b, marks=[pytest.mark.gpu, pytest.mark.skipif(
        not HAS_CUDA[b], reason=f"{b} has no CUDA here")]) for b in backends]


def without_cuda(*backends):
    """The backends as test parameters, each skipped where it has a GPU (these check fallbacks)."""
    return [pytest.param(b, marks=pytest.mark.skipif(HAS_CUDA[b], reason=f"{b} has CUDA here"))
            for b in backends]


def open_model(path, **options):
    files = resolve_model(path)
    return create_backend(files, load_spec(files), **options)


@pytest.fixture(scope="module")
def batch():
    """Two 13+2-band tiles of an odd size, as a size_multiple of 1 allows."""
    rng = np.random.default_rng(7)
    return (rng.random((2, 13, 24, 20), dtype=np.float32),
            rng.random((2, 2, 24, 20), dtype=np.float32))


@pytest.fixture(scope="module")
def identity_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("identity")
    tiny_models.identity_onnx(folder / "identity.onnx")
    tiny_models.identity_torch(folder / "identity.pt")
    return folder


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_identity_models_return_their_input_exactly(identity_files, batch, backend):
    s2, s1 = batch
    with open_model(identity_files / "identity.onnx", backend=backend, device="cpu") as model:
        restored, gate = model.run(s2, s1)
        assert (model.name, model.device, model.messages) == (backend, "cpu", [])
    assert restored.dtype == np.float32 and np.array_equal(restored, s2)
    assert gate.shape == (2, 1, 24, 20) and np.all(gate == 1)


def test_the_gate_output_is_passed_on_as_computed(tmp_path, batch):
    with open_model(tiny_models.constant_gate_onnx(tmp_path / "g.onnx", 0.25)) as model:
        assert np.all(model.run(*batch)[1] == 0.25)


def test_auto_prefers_onnxruntime_and_falls_back_to_torch(tmp_path, identity_files):
    assert open_model(identity_files / "identity.pt").name == "onnxruntime"
    torch_only = tiny_models.identity_torch(tmp_path / "torch_only.pt")
    assert open_model(torch_only).name == "torch"


def test_auto_uses_torch_when_onnxruntime_is_not_installed(identity_files, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    assert open_model(identity_files / "identity.onnx").name == "torch"


def test_a_missing_runtime_names_the_package_to_install(tmp_path, identity_files, monkeypatch):
    onnx_only = tiny_models.identity_onnx(tmp_path / "onnx_only.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match="'onnxruntime' is not installed; install onnxruntime"):
        open_model(onnx_only)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(UserError, match="'torch' is not installed; install torch"):
        open_model(identity_files / "identity.pt", backend="torch")


def test_a_backend_without_its_file_or_an_unknown_option_is_refused(tmp_path, identity_files):
    onnx_only = tiny_models.identity_onnx(tmp_path / "onnx_only.onnx")
    torch_only = tiny_models.identity_torch(tmp_path / "torch_only.pt")
    with pytest.raises(UserError, match="has no torch checkpoint"):
        open_model(onnx_only, backend="torch")
    with pytest.raises(UserError, match="has no ONNX file"):
        open_model(torch_only, backend="onnxruntime")
    with pytest.raises(UserError, match="Unknown backend 'tensorrt'"):
        open_model(onnx_only, backend="tensorrt")
    with pytest.raises(UserError, match="Unknown device 'gpu'"):
        open_model(onnx_only, device="gpu")
    with pytest.raises(UserError, match="thread count must be at least 1"):
        open_model(onnx_only, threads=0)


@pytest.mark.parametrize("make_model, fragment", [
    (lambda p: tiny_models.onnx_with_input_names(p, "optical", "sar"), "has no input 's2'"),
    (lambda p: tiny_models.onnx_with_s2_channels(p, 12), "as tensor(float) ['N', 12, 'H', 'W']"),
    (lambda p: tiny_models.onnx_with_spec(p, dict(tiny_models.tiny_spec(),
                                                  outputs={"restored": "out", "gate": "gate"})),
     "has no output 'out'"),
])
def test_graphs_that_differ_from_their_spec_are_refused_before_compute(tmp_path, make_model,
                                                                      fragment):
    path = make_model(tmp_path / "mismatch.onnx")
    with pytest.raises(UserError, match=re.escape(fragment)) as caught:
        open_model(path, backend="onnxruntime")
    assert str(path) in str(caught.value)


def test_a_graph_onnx_runtime_cannot_load_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["s2", "s1"], ["restored", "gate"])], "broken",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", c, "H", "W"])
         for n, c in (("s2", 13), ("s1", 2))],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", c, "H", "W"])
         for n, c in (("restored", 13), ("gate", 1))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {SPEC_KEY: json.dumps(tiny_models.tiny_spec())})
    onnx.save(model, tmp_path / "broken.onnx")
    with pytest.raises(UserError, match="ONNX Runtime cannot open the model file .*broken.onnx"):
        open_model(tmp_path / "broken.onnx")


def test_torch_weights_that_do_not_fit_the_network_are_refused(tmp_path):
    torch.save({"spec": tiny_models.tiny_spec(), "state_dict": {"conv.weight": torch.zeros(1)}},
               tmp_path / "extra.pt")
    with pytest.raises(UserError, match=r"do not fit the identity network .*0 tensors missing, "
                                        r"1 unexpected, 0 of another shape, e\.g\. 'conv\.weight'"):
        open_model(tmp_path / "extra.pt")
    torch.save({"spec": tiny_models.tiny_spec(architecture="unet"), "state_dict": {}},
               tmp_path / "unknown.pt")
    with pytest.raises(UserError, match="Unknown network architecture 'unet'"):
        open_model(tmp_path / "unknown.pt")


class TinyConv(torch.nn.Module):
    """A small network with real arithmetic, to compare the two runtimes on."""
    size_multiple = 1

    def __init__(self, width=4):
        super().__init__()
        self.mix = torch.nn.Conv2d(15, width, 3, padding=1)
        self.out = torch.nn.Conv2d(width, 14, 3, padding=1)

    def forward(self, s2, s1):
        features = torch.relu(self.mix(torch.cat([s2, s1], dim=1)))
        out = self.out(features)
        return registry.NetworkOutput(restored=s2 + out[:, :13], gate=torch.sigmoid(out[:, 13:]),
                                      kl=s2.new_zeros(()))


@pytest.fixture
def tiny_conv(tmp_path, batch, monkeypatch):
    """TinyConv registered as an architecture, saved as conv.pt and exported to conv.onnx."""
    monkeypatch.setitem(registry.ARCHITECTURES, "tiny_conv", TinyConv)
    torch.manual_seed(3)
    network = TinyConv(width=4).eval()
    spec = tiny_models.tiny_spec(name="tiny_conv", architecture="tiny_conv",
                                 config={"width": 4})
    torch.save({"spec": spec, "state_dict": network.state_dict()}, tmp_path / "conv.pt")
    sample = tuple(torch.from_numpy(a[:1]) for a in batch)
    dynamic = {0: "N", 2: "H", 3: "W"}
    torch.onnx.export(network, sample, tmp_path / "conv.onnx", dynamo=False,
                      input_names=["s2", "s1"], output_names=["restored", "gate", "kl"],
                      dynamic_axes={"s2": dynamic, "s1": dynamic, "restored": dynamic,
                                    "gate": dynamic})
    exported = onnx.load(tmp_path / "conv.onnx")
    helper.set_model_props(exported, {SPEC_KEY: json.dumps(spec)})
    onnx.save(exported, tmp_path / "conv.onnx")
    return tmp_path / "conv.onnx", network


def test_torch_weights_of_another_shape_are_refused(tiny_conv):
    path, _ = tiny_conv
    wider = TinyConv(width=8).state_dict()
    spec = load_spec(resolve_model(path)).raw
    torch.save({"spec": spec, "state_dict": wider}, path.with_suffix(".pt"))
    with pytest.raises(UserError, match=r"0 tensors missing, 0 unexpected, 3 of another shape, "
                                        r"e\.g\. 'mix\.weight'"):
        open_model(path, backend="torch")  # mix.weight, mix.bias, out.weight; out.bias fits


def test_onnxruntime_and_torch_agree_on_a_conv_network(tiny_conv, batch):
    path, network = tiny_conv
    by_ort = open_model(path, backend="onnxruntime", device="cpu").run(*batch)
    by_torch = open_model(path, backend="torch", device="cpu").run(*batch)
    with torch.inference_mode():
        expected = network(*map(torch.from_numpy, batch))
    assert not np.allclose(by_torch[0], batch[0], atol=1e-3)  # the network does change pixels
    for ours, theirs, reference in zip(by_ort, by_torch, expected[:2]):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(theirs, reference.numpy())


def test_the_shipped_default_model_runs_alike_on_both_backends(batch):
    files = resolve_model("default")
    if files.onnx_path is None or files.torch_path is None:
        pytest.skip("the default model is not installed as both .onnx and .pt")
    spec = load_spec(files)
    s2, s1 = (a[:, :, :2 * spec.size_multiple, :2 * spec.size_multiple] for a in batch)
    by_ort = open_model("default", backend="onnxruntime", device="cpu").run(s2, s1)
    by_torch = open_model("default", backend="torch", device="cpu").run(s2, s1)
    for ours, theirs in zip(by_ort, by_torch):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_the_thread_count_reaches_the_runtimes(identity_files):
    before = torch.get_num_threads()
    try:
        by_ort = open_model(identity_files / "identity.onnx", backend="onnxruntime", threads=1)
        assert by_ort._session.get_session_options().intra_op_num_threads == 1
        every_core = open_model(identity_files / "identity.onnx", backend="onnxruntime")
        assert every_core._session.get_session_options().intra_op_num_threads == \
            len(os.sched_getaffinity(0))
        open_model(identity_files / "identity.pt", backend="torch", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("backend", without_cuda("onnxruntime", "torch"))
def test_cuda_asked_for_without_a_gpu_runs_on_the_cpu_and_says_so(identity_files, batch,
                                                                   backend):
    with open_model(identity_files / "identity.onnx", backend=backend, device="cuda") as model:
        assert model.device == "cpu"
        assert len(model.messages) == 1 and "running on the CPU" in model.messages[0]
        assert np.array_equal(model.run(*batch)[0], batch[0])


@pytest.mark.parametrize("backend", without_cuda("onnxruntime", "torch"))
def test_auto_device_without_a_gpu_runs_on_the_cpu_silently(identity_files, backend):
    model = open_model(identity_files / "identity.onnx", backend=backend, device="auto")
    assert (model.device, model.messages) == ("cpu", [])


class FailsOnceOnGpu:
    """Wraps a backend's compute so that its first call fails as CUDA does when a batch does not
    fit in GPU memory; this machine has no GPU, so the failure is the one stand-in here."""

    def __init__(self, backend):
        self.backend, self.compute, self.devices = backend, backend._infer, []

    def __call__(self, s2, s1):
        self.devices.append(self.backend.device)
        if len(self.devices) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(more detail)")
        return self.compute(s2, s1)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_a_gpu_failure_during_a_run_reruns_the_batch_on_the_cpu(identity_files, batch, backend,
                                                               monkeypatch):
    model = open_model(identity_files / "identity.onnx", backend=backend, device="cpu")
    model.device = "cuda"  # as if it had opened on a GPU
    failing = FailsOnceOnGpu(model)
    monkeypatch.setattr(model, "_infer", failing)
    restored, gate = model.run(*batch)
    assert failing.devices == ["cuda", "cpu"]
    assert np.array_equal(restored, batch[0]) and np.all(gate == 1)
    assert model.device == "cpu"
    assert model.messages == ["The GPU failed during inference (CUDA out of memory. Tried to "
                              "allocate 2.00 GiB); continuing on the CPU."]
    assert np.array_equal(model.run(*batch)[0], batch[0]) and len(failing.devices) == 3


def test_a_failure_on_the_cpu_is_not_retried(identity_files, batch):
    model = open_model(identity_files / "identity.onnx", device="cpu")
    with pytest.raises(InvalidArgument, match="invalid dimensions for input: s2"):
        model.run(batch[0][:, :12], batch[1])
    assert model.messages == []


@pytest.mark.parametrize("backend", with_cuda("onnxruntime", "torch"))
def test_a_gpu_is_used_when_there_is_one_and_agrees_with_the_cpu(tiny_conv, batch, backend):
    path, _ = tiny_conv
    with open_model(path, backend=backend, device="auto") as on_gpu:
        assert (on_gpu.device, on_gpu.messages) == ("cuda", [])
        by_gpu = on_gpu.run(*batch)
    by_cpu = open_model(path, backend=backend, device="cpu").run(*batch)
    for ours, theirs in zip(by_gpu, by_cpu):  # GPU convolutions may round through TF32
        np.testing.assert_allclose(ours, theirs, atol=5e-3, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA["torch"], reason="torch has no CUDA here")
def test_a_real_gpu_out_of_memory_reruns_the_batch_on_the_cpu(tiny_conv):
    path, _ = tiny_conv
    rng = np.random.default_rng(1)
    big = (rng.random((8, 13, 512, 512), dtype=np.float32),
           rng.random((8, 2, 512, 512), dtype=np.float32))  # 117 MB of input alone
    expected = open_model(path, backend="torch", device="cpu").run(*big)
    model = open_model(path, backend="torch", device="cuda")
    assert model.device == "cuda"
    cap = 48 * 2**20 / torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(cap)
    try:
        restored, gate = model.run(*big)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert model.device == "cpu"
    assert len(model.messages) == 1 and "out of memory" in model.messages[0].lower()
    np.testing.assert_allclose(restored, expected[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(gate, expected[1], atol=1e-6, rtol=0)
