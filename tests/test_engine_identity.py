"""Bit-exactness of the whole engine with an identity model.

An identity model returns its S2 input, so whatever the tiling, the blending, the block size, the
AOI or the backend, the restored image must equal the S2 input pixel for pixel: any misplaced
tile, seam, off-by-one crop or rounding slip shows up as a differing DN.
"""
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

import georasters
import tiny_models
from georasters import ORIGIN
from sar_cloud_removal.core import engine
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds

X0, Y0 = ORIGIN


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks smaller than the image, so tiles straddle block boundaries in every test."""
    monkeypatch.setattr(engine, "BLOCK_SIZE", 80)


def _run(tmp_path, s2, s1, model, **request):
    # The raw network's output: keeping clear pixels would copy the input whatever the tiler
    # did, and these tests are about the tiler.
    request.setdefault("raw_network", True)
    out = tmp_path / "out.tif"
    fractions = []
    result = remove_clouds(RemovalRequest(str(s2), str(s1), str(out), model=str(model), **request),
                           progress=lambda fraction, message: fractions.append(fraction))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    return result


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.transform


def _crop_of_s2(s2_path, transform):
    """The S2 pixels under an output whose transform must lie on the S2 grid."""
    with rasterio.open(s2_path) as src:
        col, row = ~src.transform * (transform.c, transform.f)
        assert col == round(col) and row == round(row), "output is off the S2 pixel grid"
        return src.read(), int(round(row)), int(round(col))


@pytest.mark.parametrize("tile, overlap, multiple, request_tile, request_overlap, aoi, aoi_crs", [
    (64, 16, 1, None, None, None, None),                  # 64 divides neither 200 nor 150
    (48, 0, 1, None, None, None, None),                   # tiles abut, no blending
    (64, 16, 8, None, None, (X0 + 155, Y0 - 1633, X0 + 1207, Y0 - 402), None),
    (64, 16, 8, 50, 20, None, None),                      # user tile rounded up to 56
    (32, 8, 1, None, None, "lonlat", "EPSG:4326"),
])
def test_identity_model_returns_the_s2_input_exactly(tmp_path, small_blocks, tile, overlap,
                                                    multiple, request_tile, request_overlap, aoi,
                                                    aoi_crs):
    s2, s1 = georasters.pair(tmp_path, rows=200, cols=150)
    model = tiny_models.identity_onnx(tmp_path / "id.onnx", tile, overlap, multiple)
    if aoi == "lonlat":
        aoi = transform_bounds(georasters.UTM31, "EPSG:4326", X0 + 333, Y0 - 1777, X0 + 1111,
                               Y0 - 123)
    result = _run(tmp_path, s2, s1, model, aoi=aoi, aoi_crs=aoi_crs, tile_size=request_tile,
                  overlap=request_overlap)

    restored, profile, transform = _read(result.out_path)
    source, row, col = _crop_of_s2(s2, transform)
    assert profile["dtype"] == "uint16" and profile["crs"] == georasters.UTM31
    assert (result.height, result.width) == restored.shape[1:]
    np.testing.assert_array_equal(restored, source[:, row:row + result.height,
                                                   col:col + result.width])
    gate, gate_profile, gate_transform = _read(result.gate_path)
    assert gate_transform == transform and gate_profile["dtype"] == "float32"
    assert (gate == 1).all()
    if aoi is None:
        assert (row, col, result.height, result.width) == (0, 0, 200, 150)
    else:   # the output covers the AOI, widened by less than a pixel on each side
        with rasterio.open(result.out_path) as out:
            left, bottom, right, top = out.bounds
            wanted = transform_bounds(aoi_crs or out.crs, out.crs, *aoi, densify_pts=21)
        assert 0 <= wanted[0] - left < 10 and 0 <= wanted[1] - bottom < 10
        assert 0 <= right - wanted[2] < 10 and 0 <= top - wanted[3] < 10
    assert request_tile is None or any("50 to 56" in m for m in result.messages)


def test_identity_through_torch_and_a_coarser_s1_in_another_crs(tmp_path, small_blocks):
    """The torch backend and a reprojected S1 do not change the S2 pass-through either."""
    s2 = georasters.write_tif(tmp_path / "s2.tif", georasters.s2_dn(120, 100, seed=3))
    west, south, east, north = transform_bounds(georasters.UTM31, "EPSG:4326",
                                                X0 - 500, Y0 - 1700, X0 + 1500, Y0 + 500)
    s1_data = georasters.s1_db(80, 90)
    s1 = georasters.write_tif(tmp_path / "s1.tif", s1_data, crs="EPSG:4326",
                              transform=from_origin(west, north, (east - west) / 90,
                                                    (north - south) / 80))
    model = tiny_models.identity_torch(tmp_path / "id.pt", 64, 16, 1)
    result = _run(tmp_path, s2, s1, model, backend="torch")
    assert (result.backend, result.device, result.model_name) == ("torch", "cpu", "identity")
    restored, _, _ = _read(result.out_path)
    with rasterio.open(s2) as src:
        np.testing.assert_array_equal(restored, src.read())


def test_nodata_in_either_input_is_written_as_nodata_and_the_rest_is_exact(tmp_path,
                                                                           small_blocks):
    dn = georasters.s2_dn(150, 120, low=1)
    dn[:, 10:30, 20:50] = 0                # S2 nodata
    dn[4, 100:105, 0:10] = 0               # one band missing: the pixel is unusable
    s1_data = georasters.s1_db(150, 120)
    s1_data[:, 60:90, 70:100] = np.nan     # S1 nodata
    s2, s1 = georasters.pair(tmp_path, s2=dn, s1=s1_data, s2_nodata=0,
                             s1_transform=from_origin(X0 + 200, Y0, 10, 10))  # S1 20 px right
    model = tiny_models.identity_onnx(tmp_path / "id.onnx", 48, 12, 1)
    result = _run(tmp_path, s2, s1, model)

    assert (result.width, result.height) == (100, 150)      # the S1 ∩ S2 overlap
    restored, profile, _ = _read(result.out_path)
    gate, _, _ = _read(result.gate_path)
    invalid = np.zeros((150, 120), bool)
    invalid[10:30, 20:50] = invalid[100:105, 0:10] = True
    invalid[60:90, 90:120] = True          # the S1 hole, in S2 columns
    invalid = invalid[:, 20:]
    assert profile["nodata"] == 0
    assert (restored[:, invalid] == 0).all() and np.isnan(gate[0, invalid]).all()
    np.testing.assert_array_equal(restored[:, ~invalid], dn[:, :, 20:][:, ~invalid])
    assert (gate[0, ~invalid] == 1).all()


def test_invalid_pixels_get_a_nodata_value_when_s2_has_none(tmp_path):
    """S1 holes, and S2 pixels zero in every band (L1C NO_DATA), become nodata 0."""
    dn = georasters.s2_dn(100, 100, low=1)
    dn[:, 90:, 90:] = 0                    # a zero-filled swath corner, no nodata tag
    dn[3, 50, 50] = 0                      # a lone zero in one band is a valid value
    s1_data = georasters.s1_db(100, 100)
    s1_data[:, :, :7] = np.nan
    s2, s1 = georasters.pair(tmp_path, rows=100, cols=100, s2=dn, s1=s1_data)
    result = _run(tmp_path, s2, s1, tiny_models.identity_onnx(tmp_path / "id.onnx"))
    restored, profile, _ = _read(result.out_path)
    gate, _, _ = _read(result.gate_path)
    invalid = np.zeros((100, 100), bool)
    invalid[:, :7] = invalid[90:, 90:] = True
    assert profile["nodata"] == 0 and (restored[:, invalid] == 0).all()
    assert np.isnan(gate[0, invalid]).all() and (gate[0, ~invalid] == 1).all()
    np.testing.assert_array_equal(restored[:, ~invalid], dn[:, ~invalid])
    assert any("nodata" in m for m in result.messages)


def test_without_invalid_pixels_no_nodata_value_is_invented(tmp_path):
    s2, s1 = georasters.pair(tmp_path, rows=60, cols=60)
    result = _run(tmp_path, s2, s1, tiny_models.identity_onnx(tmp_path / "id.onnx"))
    assert _read(result.out_path)[1]["nodata"] is None


def test_offset_products_come_back_exactly_in_their_own_dtype(tmp_path, small_blocks):
    dn = georasters.s2_dn(130, 110, dtype=np.int16, low=1000, high=11000)
    s2, s1 = georasters.pair(tmp_path, s2=dn, s1=georasters.s1_db(130, 110))
    result = _run(tmp_path, s2, s1, tiny_models.identity_onnx(tmp_path / "id.onnx", 64, 16, 1))
    restored, profile, _ = _read(result.out_path)
    assert profile["dtype"] == "int16"
    np.testing.assert_array_equal(restored, dn)
    assert any("+1000" in m for m in result.messages)


def test_float_s2_keeps_its_dtype_fractions_and_nan(tmp_path):
    dn = georasters.s2_dn(90, 80).astype(np.float32) + np.float32(0.25)
    dn[:, 5:9, 5:9] = np.nan
    s2, s1 = georasters.pair(tmp_path, s2=dn, s1=georasters.s1_db(90, 80))
    result = _run(tmp_path, s2, s1, tiny_models.identity_onnx(tmp_path / "id.onnx"))
    restored, profile, _ = _read(result.out_path)
    assert profile["dtype"] == "float32" and np.isnan(profile["nodata"])
    assert np.isnan(restored[:, 5:9, 5:9]).all()
    valid = np.isfinite(dn)
    np.testing.assert_allclose(restored[valid], np.clip(dn[valid], 0, 10000), atol=2e-3)
    assert np.abs(restored[valid] % 1 - 0.25).min() < 2e-3    # fractions are not rounded away


def test_result_reports_size_timing_and_backend(tmp_path):
    s2, s1 = georasters.pair(tmp_path, rows=70, cols=90)
    result = _run(tmp_path, s2, s1, tiny_models.identity_onnx(tmp_path / "id.onnx"),
                  gate_path=str(tmp_path / "confidence.tif"))
    assert (result.width, result.height) == (90, 70)
    assert result.megapixels == pytest.approx(90 * 70 / 1e6)
    assert result.seconds > 0
    assert (result.backend, result.device, result.model_name) == ("onnxruntime", "cpu", "identity")
    assert result.gate_path == str(tmp_path / "confidence.tif")
    assert georasters.files_in(tmp_path) == {"s2.tif", "s1.tif", "id.onnx", "out.tif",
                                             "confidence.tif"}
    with rasterio.open(result.out_path) as out:
        assert out.profile["compress"] == "deflate" and out.block_shapes[0] == (256, 256)
    assert engine.default_gate_path(tmp_path / "a.tif") == tmp_path / "a_gate.tif"
