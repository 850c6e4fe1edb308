"""Seams, proven: the engine's blend of overlapping tiles, checked with a tile-dependent model.

An identity model gives the same value for a pixel whichever tile computed it, so it cannot see
the blending: any weights, even random ones, blend equal values to that value. The model here
adds to every pixel a constant of its own tile (the tile's mean of S2 band 1, scaled), as
IB-HFN's pooled gate context makes its output depend on the tile. The engine's output must then
equal the weighted mean of the tiles' constants with the documented raised-cosine window,
computed here independently of core/tiling.py, and must change smoothly across tile edges;
the result must not depend on how the output is cut into blocks.
"""
import json

import numpy as np
import onnx
import pytest
import rasterio
from onnx import TensorProto, helper

import georasters
import tiny_models
from sar_cloud_removal.core import engine
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds

SCALE = 0.25          # restored = s2 + SCALE * (tile mean of S2 band 1), on the [0, 1] scale
FLOOR = 1e-3          # the blend window's documented floor (core/tiling.py)


def tile_mean_onnx(path, tile_size, overlap):
    """restored = s2 + SCALE * mean_tile(s2[:, 0]); gate = mean_tile(s2[:, 1]) (+ 0 * s1)."""
    s2 = helper.make_tensor_value_info("s2", TensorProto.FLOAT, ["N", 13, "H", "W"])
    s1 = helper.make_tensor_value_info("s1", TensorProto.FLOAT, ["N", 2, "H", "W"])
    outputs = [helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["N", 13, "H", "W"]),
               helper.make_tensor_value_info("gate", TensorProto.FLOAT, ["N", 1, "H", "W"])]
    init = [helper.make_tensor(name, TensorProto.INT64, [1], [value])
            for name, value in (("zero_i", 0), ("one_i", 1), ("two_i", 2), ("axis1", 1))]
    init += [helper.make_tensor("scale", TensorProto.FLOAT, [1], [SCALE]),
             helper.make_tensor("zero_f", TensorProto.FLOAT, [1], [0.0])]
    nodes = [
        helper.make_node("Slice", ["s2", "zero_i", "one_i", "axis1"], ["band0"]),
        helper.make_node("Slice", ["s2", "one_i", "two_i", "axis1"], ["band1"]),
        helper.make_node("Slice", ["s1", "zero_i", "one_i", "axis1"], ["vv"]),
        helper.make_node("ReduceMean", ["band0"], ["mean0"], axes=[2, 3], keepdims=1),
        helper.make_node("ReduceMean", ["band1"], ["mean1"], axes=[2, 3], keepdims=1),
        helper.make_node("Mul", ["mean0", "scale"], ["shift"]),
        helper.make_node("Add", ["s2", "shift"], ["restored"]),
        helper.make_node("Mul", ["vv", "zero_f"], ["zeros"]),
        helper.make_node("Add", ["zeros", "mean1"], ["gate"]),
    ]
    graph = helper.make_graph(nodes, "tile_mean", [s2, s1], outputs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", tiny_models.OPSET)])
    model.ir_version = tiny_models.IR_VERSION
    helper.set_model_props(model, {"sar_cloud_removal": json.dumps(
        tiny_models.tiny_spec(tile_size, overlap, name="tile_mean"))})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _starts(length, tile, overlap, margin):
    """The documented global grid: every tile - overlap px over the image grown by the margin,
    the last tile flush with the grown image's end."""
    grown = length + 2 * margin
    if grown <= tile:
        return [-margin]
    return [s - margin for s in list(range(0, grown - tile, tile - overlap)) + [grown - tile]]


def _window(tile):
    ramp = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2
    ramp = FLOOR + (1 - FLOOR) * ramp
    return np.outer(ramp, ramp)


def expected(dn, tile, overlap, window_of=None):
    """(restored DN as float, gate) the engine must write, computed in float64."""
    margin = overlap // 2
    bands, rows, cols = dn.shape
    x = np.clip(dn.astype(np.float64), 0, 10000) / 10000
    padded = np.pad(x, ((0, 0), (margin, margin), (margin, margin)), mode="reflect")
    total_shift = np.zeros((rows, cols))
    total_gate = np.zeros((rows, cols))
    weight = np.zeros((rows, cols))
    window = (window_of or _window)(tile)
    for r in _starts(rows, tile, overlap, margin):
        for c in _starts(cols, tile, overlap, margin):
            patch = padded[:, r + margin:r + margin + tile, c + margin:c + margin + tile]
            r0, c0 = max(r, 0), max(c, 0)
            r1, c1 = min(r + tile, rows), min(c + tile, cols)
            w = window[r0 - r:r1 - r, c0 - c:c1 - c]
            total_shift[r0:r1, c0:c1] += w * SCALE * patch[0].mean()
            total_gate[r0:r1, c0:c1] += w * patch[1].mean()
            weight[r0:r1, c0:c1] += w
    restored = (x + total_shift / weight) * 10000
    return restored, total_gate / weight


def _scene(tmp_path, rows, cols):
    """S2 whose band 1 and 2 vary strongly over tens of pixels, so tiles' means differ."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    dn = georasters.s2_dn(rows, cols, seed=5, low=1000, high=4000)
    dn[0] = 1000 + 3000 * (0.5 + 0.5 * np.sin(xx / 23.0) * np.cos(yy / 31.0))
    dn[1] = 2000 + 6000 * (yy + xx) / (rows + cols)
    return georasters.pair(tmp_path, s2=dn, s1=georasters.s1_db(rows, cols)), dn


def _run(tmp_path, s2, s1, model, name):
    out = tmp_path / f"{name}.tif"
    result = remove_clouds(RemovalRequest(str(s2), str(s1), str(out), model=str(model),
                                          raw_network=True, s2_offset=0, batch_size=1))
    with rasterio.open(result.out_path) as src:
        restored = src.read()
    with rasterio.open(result.gate_path) as src:
        gate = src.read(1)
    return restored, gate, result.tile_size


@pytest.mark.parametrize("tile, overlap, rows, cols", [(64, 24, 230, 190), (48, 16, 97, 161)])
def test_a_tile_dependent_model_is_blended_with_the_smooth_window(tmp_path, monkeypatch, tile,
                                                                  overlap, rows, cols):
    (s2, s1), dn = _scene(tmp_path, rows, cols)
    model = tile_mean_onnx(tmp_path / "tile_mean.onnx", tile, overlap)

    outputs = {}
    for block in (80, 4096):   # blocks smaller than the image, and one block for all of it
        monkeypatch.setattr(engine, "BLOCK_SIZE", block)
        restored, gate, fitted = outputs[block] = _run(tmp_path, s2, s1, model, f"out{block}")
        # The engine fits the tile to the image (as many tiles, no more pixels than needed).
        assert 2 * overlap < fitted <= tile
        want_restored, want_gate = expected(dn, fitted, overlap)
        # Rounding to DN: float32 against float64 may fall on either side of a half.
        assert np.abs(restored - want_restored).max() <= 1.0
        assert np.abs(gate - want_gate).max() <= 1e-5
        # The network's own contribution: large enough that a wrong blend shows.
        assert np.ptp(want_restored - dn) > 300
        # No seams: the blended shift bends gently from pixel to pixel (second differences of a
        # few DN; a box window makes steps of over 100 DN at tile edges).
        shift = restored[0].astype(np.float64) - dn[0]
        assert np.abs(np.diff(shift, n=2, axis=0)).max() <= 12
        assert np.abs(np.diff(shift, n=2, axis=1)).max() <= 12
    # The same tiles, blended the same way, whichever block a pixel lies in: bit for bit (one
    # tile per call: how tiles are batched may move a reduction's last float bit).
    np.testing.assert_array_equal(outputs[80][0], outputs[4096][0])
    np.testing.assert_array_equal(outputs[80][1], outputs[4096][1])


def test_the_reference_sees_a_box_window(tmp_path):
    """The reference above is sensitive: without the raised cosine the values move by far more
    than the test's tolerance (and jump at tile edges)."""
    dn = _scene(tmp_path, 230, 190)[1]
    smooth, _ = expected(dn, 64, 24)
    boxed, _ = expected(dn, 64, 24, window_of=lambda tile: np.ones((tile, tile)))
    assert np.abs(smooth - boxed).max() > 20
