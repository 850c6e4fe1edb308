"""Clear pixels kept: where the gate says clear sky the engine writes the input unchanged.

A model that alters every pixel (restored = s2 + 0.01) with a chosen constant gate shows which
pixels the engine keeps; test_shipped_models holds every shipped model to keeping a real
cloud-free scene bit for bit.
"""
import numpy as np
import pytest
import rasterio

import georasters
import tiny_models
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds
from sar_cloud_removal.core.keep_clear import KEEP_FULL, KEEP_NONE, keep_clear, keep_weight

SHIFT_DN = 100   # the test model's shift, 0.01 on the network scale


def test_keep_weight_is_one_above_full_zero_below_none_and_smooth_between():
    gate = np.array([0.0, KEEP_NONE, (KEEP_NONE + KEEP_FULL) / 2, KEEP_FULL, 1.0, np.nan])
    weight = keep_weight(gate)
    assert weight.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 0.0]
    between = keep_weight(np.linspace(KEEP_NONE, KEEP_FULL, 101))
    assert np.all(np.diff(between) >= 0)
    # smoothstep: flat at both ends of the band, so the transition has no visible edge
    assert between[1] - between[0] < 1e-3 and between[-1] - between[-2] < 1e-3


def test_keep_clear_copies_the_original_bit_for_bit_where_the_weight_is_one():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 65535, (13, 20, 20), dtype=np.uint16)
    restored = rng.integers(0, 65535, (13, 20, 20), dtype=np.uint16)
    weight = np.zeros((20, 20), np.float32)
    weight[:10] = 1.0
    weight[10:15] = 0.5
    out = keep_clear(restored, original, weight)
    assert out.dtype == np.uint16
    assert np.array_equal(out[:, :10], original[:, :10])
    assert np.array_equal(out[:, 15:], restored[:, 15:])
    mixed = np.rint((original[:, 10:15].astype(np.float64) + restored[:, 10:15]) / 2)
    assert np.abs(out[:, 10:15] - mixed).max() <= 1


def _restore(tmp_path, gate_value, raw_network=False, keep_clear=None):
    s2, s1 = georasters.pair(tmp_path, rows=120, cols=100)
    model = tiny_models.shifted_onnx(tmp_path / "shifted.onnx", gate_value, SHIFT_DN / 10000,
                                     keep_clear=keep_clear)
    out = tmp_path / "out.tif"
    result = remove_clouds(RemovalRequest(str(s2), str(s1), str(out), model=str(model),
                                          raw_network=raw_network))
    with rasterio.open(s2) as src, rasterio.open(out) as dst:
        return src.read().astype(np.int64), dst.read().astype(np.int64), result


@pytest.mark.parametrize("gate_value, kept", [(1.0, True), (KEEP_FULL, True), (0.0, False),
                                              (KEEP_NONE, False)])
def test_engine_keeps_clear_pixels_and_restores_cloudy_ones(tmp_path, gate_value, kept):
    original, out, _ = _restore(tmp_path, gate_value)
    if kept:
        assert np.array_equal(out, original)
    else:
        assert np.abs(out - (original + SHIFT_DN)).max() <= 1


@pytest.mark.parametrize("gate_value, kept", [(0.75, True), (0.7, "half"), (0.65, False)])
def test_a_model_spec_sets_its_own_keep_clear_levels(tmp_path, gate_value, kept):
    """A gate of 0.75 is below the default levels (restored there) but kept at a model's own
    levels of 0.65/0.75; the transition band moves with them."""
    original, out, _ = _restore(tmp_path, gate_value, keep_clear=(0.65, 0.75))
    if kept is True:
        assert np.array_equal(out, original)
    elif kept == "half":
        assert np.abs(out - (original + SHIFT_DN // 2)).max() <= 1
    else:
        assert np.abs(out - (original + SHIFT_DN)).max() <= 1


def test_without_levels_of_its_own_the_same_gate_is_restored(tmp_path):
    assert 0.75 < KEEP_NONE
    original, out, _ = _restore(tmp_path, 0.75)
    assert np.abs(out - (original + SHIFT_DN)).max() <= 1


def test_in_the_transition_band_the_output_lies_between_input_and_restoration(tmp_path):
    original, out, _ = _restore(tmp_path, (KEEP_NONE + KEEP_FULL) / 2)
    assert np.abs(out - (original + SHIFT_DN // 2)).max() <= 1


def test_raw_network_writes_the_network_output_over_clear_pixels(tmp_path):
    original, out, result = _restore(tmp_path, 1.0, raw_network=True)
    assert np.abs(out - (original + SHIFT_DN)).max() <= 1
    assert any("raw network" in m for m in result.messages)
