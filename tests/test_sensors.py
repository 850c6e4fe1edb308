"""S1/S2 value conventions: scaling both ways, offset detection, linear-power recognition."""
import numpy as np
import pytest
import rasterio

from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.sensors import (denormalise_s2, detect_s2_offset, invalid_s1_pixels,
                                            invalid_s2_pixels, is_linear_power, normalise_s1,
                                            normalise_s2, resolve_s2_offset)

TERRAMIND_WITH_OFFSET = {"282D_485L_3_3", "433D_629L_3_1", "609U_541L_3_0"}
TERRAMIND_TILES = TERRAMIND_WITH_OFFSET | {"38D_378R_2_3", "637U_59R_1_3"}


@pytest.mark.parametrize("dtype, offset", [(np.uint16, 0), (np.uint16, 1000), (np.int16, 1000),
                                           (np.int32, 0)])
def test_every_in_range_dn_survives_the_round_trip_exactly(dtype, offset):
    dn = (np.arange(0, 10001) + offset).astype(dtype)
    scaled = normalise_s2(dn, offset)
    assert scaled.dtype == np.float32
    assert scaled.min() == 0 and scaled.max() == 1
    back = denormalise_s2(scaled, offset, dtype)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, dn)


def test_s2_values_outside_the_reflectance_range_are_clipped():
    dn = np.array([0, 500, 999, 1000, 11000, 26000], np.uint16)
    np.testing.assert_array_equal(normalise_s2(dn, 1000), [0, 0, 0, 0, 1, 1])
    np.testing.assert_allclose(normalise_s2(dn, 0), [0, 0.05, 0.0999, 0.1, 1, 1], rtol=1e-6)


def test_denormalise_clips_to_the_output_dtype_range():
    values = np.array([-0.5, 0.0, 4.0], np.float32)
    np.testing.assert_array_equal(denormalise_s2(values, 0, np.uint16), [0, 0, 40000])
    np.testing.assert_array_equal(denormalise_s2(values, 0, np.int16), [-5000, 0, 32767])


def test_denormalise_keeps_fractions_for_float_images():
    values = np.array([0.12345], np.float32)
    out = denormalise_s2(values, 0, np.float32)
    assert out.dtype == np.float32
    assert out[0] == pytest.approx(1234.5, abs=1e-3)


def test_offset_detected_when_no_valid_pixel_goes_below_1000():
    rng = np.random.default_rng(0)
    sample = rng.integers(1003, 6000, (13, 40, 40)).astype(float)
    sample[10] = rng.integers(1003, 1060, (40, 40))   # B10 over clear sky, with the offset
    valid = np.ones((40, 40), bool)
    assert detect_s2_offset(sample, valid) == 1000
    sample[10] = rng.integers(5, 60, (40, 40))     # B10 as without the offset
    assert detect_s2_offset(sample, valid) == 0


def test_offset_detection_ignores_invalid_pixels_and_a_few_noisy_ones():
    sample = np.full((13, 50, 50), 1500.0)
    sample[10] = 1020                  # B10 with the offset
    sample[:, :10, :] = 0              # nodata rows
    sample[10, 20, :3] = 990           # three slightly negative reflectances in B10
    valid = ~invalid_s2_pixels(sample, None, np.uint16)
    assert not valid[:10].any() and valid[10:].all()
    assert detect_s2_offset(sample, valid) == 1000
    assert detect_s2_offset(sample, np.zeros((50, 50), bool)) == 0


def test_a_scene_too_bright_to_tell_is_refused_with_the_setting_to_use():
    cloudy = np.full((13, 30, 30), 2300.0)     # thick cloud: even B10 is bright
    valid = np.ones((30, 30), bool)
    assert detect_s2_offset(cloudy, valid) is None
    with pytest.raises(UserError) as caught:
        resolve_s2_offset("auto", cloudy, valid, {}, "cloudy.tif")
    text = str(caught.value)
    assert len(text.splitlines()) == 1
    assert "cloudy.tif" in text and "2300 DN" in text and "--s2-offset" in text
    assert resolve_s2_offset(0, cloudy, valid)[0] == 0           # the setting always works
    assert resolve_s2_offset("1000", cloudy, valid)[0] == 1000


def test_offset_setting_auto_integer_and_rejections():
    sample, valid = np.full((13, 4, 4), 1020.0), np.ones((4, 4), bool)
    offset, note = resolve_s2_offset("auto", sample, valid)
    assert offset == 1000 and "+1000" in note and "pixels" in note
    assert resolve_s2_offset(0, sample, valid)[0] == 0
    assert resolve_s2_offset("1000", sample * 0, valid)[0] == 1000
    for bad in ("automatic", -1000, None):
        with pytest.raises(UserError):
            resolve_s2_offset(bad, sample, valid)


def test_metadata_overrides_the_pixel_statistics():
    cloudy = np.full((13, 4, 4), 3000.0)     # thick cloud: the pixels cannot tell
    valid = np.ones((4, 4), bool)
    offset, note = resolve_s2_offset("auto", cloudy, valid, {"PROCESSING_BASELINE": "02.09"})
    assert offset == 0 and "processing baseline 02.09" in note
    assert resolve_s2_offset("auto", cloudy * 0, valid, {"PROCESSING_BASELINE": "05.10"})[0] \
        == 1000
    offset, note = resolve_s2_offset("auto", cloudy, valid, {
        "RADIO_ADD_OFFSET": "-1000", "PROCESSING_BASELINE": "04.00",
        "S2_METADATA_SOURCE": "the product's MTD_MSIL1C.xml"})
    assert offset == 1000 and "RADIO_ADD_OFFSET -1000 in the product's MTD_MSIL1C.xml" in note
    # Earth Engine's harmonized collection: baseline 04.00 but the offset already removed
    assert resolve_s2_offset("auto", cloudy, valid, {"RADIO_ADD_OFFSET": "0",
                                                     "PROCESSING_BASELINE": "04.00"})[0] == 0
    with pytest.raises(UserError, match="Cannot tell"):          # unreadable metadata
        resolve_s2_offset("auto", cloudy, valid, {"PROCESSING_BASELINE": "n/a"})
    assert resolve_s2_offset(0, cloudy, valid, {"PROCESSING_BASELINE": "05.10"})[0] == 0


def _valid_sample(path):
    with rasterio.open(path) as src:
        dn = src.read()
        return dn.astype(float), ~invalid_s2_pixels(dn, src.nodata)


def test_offset_detected_on_exactly_the_terramind_tiles_that_carry_it(shared_data):
    folder = shared_data / "terramind_examples" / "S2L1C"
    found = {name for name in TERRAMIND_TILES
             if detect_s2_offset(*_valid_sample(folder / f"{name}.tif")) == 1000}
    assert found == TERRAMIND_WITH_OFFSET


def test_an_offset_tile_with_zero_rows_is_still_recognised(shared_data):
    """Zero-filled rows (a swath edge, no nodata tag) are not pixels: with them counted as
    valid the darkest percentile drops to 0 and the offset is missed."""
    with rasterio.open(shared_data / "terramind_examples" / "S2L1C" / "282D_485L_3_3.tif") as src:
        dn = src.read()
    dn[:, :12] = 0
    valid = ~invalid_s2_pixels(dn, None)
    assert detect_s2_offset(dn.astype(float), valid) == 1000
    assert detect_s2_offset(dn.astype(float), np.ones(valid.shape, bool)) == 0   # the old bug


def test_no_real_2018_date_is_taken_for_an_offset_product(shared_data):
    """30 real dates of 2018 (before baseline 04.00): clear ones are judged offset-free, and the
    two under thick cloud everywhere are refused rather than guessed (they used to be taken for
    offset products and came out about 2100 DN too bright)."""
    refused = []
    for path in sorted((shared_data / "sen12mscrts_s2_timeseries").glob("*.tif")):
        offset = detect_s2_offset(*_valid_sample(path))
        assert offset in (0, None), path.name
        if offset is None:
            refused.append(path.name.split("_")[5])
    assert sorted(refused) == ["2018-11-02", "2018-12-22"]


def test_s1_zero_fill_and_nodata_are_invalid():
    values = np.array([[[0.0, 0.0, -12.0, np.nan, -9999.0]],
                       [[0.0, -20.0, 0.0, -18.0, -15.0]]], np.float32)
    np.testing.assert_array_equal(invalid_s1_pixels(values, None), [[True, False, False, True,
                                                                     False]])
    np.testing.assert_array_equal(invalid_s1_pixels(values, -9999.0), [[False, False, False,
                                                                        True, True]])


def test_s1_db_maps_onto_the_unit_range_and_keeps_nan():
    db = np.array([-40, -25, -12.5, 0, 3, np.nan], np.float32)
    np.testing.assert_allclose(normalise_s1(db, linear=False), [0, 0, 0.5, 1, 1, np.nan])


def test_s1_linear_power_is_converted_to_db_first():
    power = np.array([1.0, 0.1, 0.01, 0.0, np.nan], np.float32)   # 0, -10, -20, -inf dB
    np.testing.assert_allclose(normalise_s1(power, linear=True), [1, 0.6, 0.2, 0, np.nan],
                               rtol=1e-6)


def test_linear_power_recognised_on_real_s1_and_its_power_form(shared_data):
    with rasterio.open(shared_data / "sen12mscr" / "s1" / "ROIs2017_winter_112_p797.tif") as src:
        db = src.read().astype(np.float64)
    assert not is_linear_power(db)
    power = 10 ** (db / 10)
    power[0, :5, :5] = np.nan
    assert is_linear_power(power)
    np.testing.assert_allclose(normalise_s1(power, linear=True)[:, 5:, 5:],
                               normalise_s1(db, linear=False)[:, 5:, 5:], atol=1e-5)
