"""The engine on real Sentinel data: SEN12MS-CR, Sen1Floods11 (EPSG:4326, nodata) and TerraMind
(five UTM zones, three with the +1000 offset), plus S1 alignment through a reprojection."""
import json

import numpy as np
import pytest
import rasterio
from onnx import TensorProto, helper, save
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

import tiny_models
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds
from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.model_spec import SPEC_KEY, load_spec, resolve_model

SEN12 = "ROIs2017_winter_112_p797.tif"
TERRAMIND_OFFSET = {"282D_485L_3_3": 1000, "433D_629L_3_1": 1000, "609U_541L_3_0": 1000,
                    "38D_378R_2_3": 0, "637U_59R_1_3": 0}


@pytest.fixture
def identity(tmp_path):
    return str(tiny_models.identity_onnx(tmp_path / "identity.onnx", tile_size=64, overlap=16))


def _run(tmp_path, s2, s1, model, **request):
    return remove_clouds(RemovalRequest(str(s2), str(s1), str(tmp_path / "restored.tif"),
                                        model=model, **request))


def _s2_pixels_under(s2_path, out):
    """The S2 pixels beneath an output raster, which must lie on the S2 grid."""
    with rasterio.open(s2_path) as src:
        col, row = ~src.transform * (out.transform.c, out.transform.f)
        assert abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6
        return src.read(window=((round(row), round(row) + out.height),
                                (round(col), round(col) + out.width)))


def test_sen12mscr_triplet_cropped_to_a_lonlat_aoi(tmp_path, shared_data, identity):
    s2 = shared_data / "sen12mscr" / "s2_cloudy" / SEN12
    s1 = shared_data / "sen12mscr" / "s1" / SEN12
    aoi = (5.905, 50.780, 5.925, 50.792)
    result = _run(tmp_path, s2, s1, identity, aoi=aoi, aoi_crs="EPSG:4326")
    with rasterio.open(result.out_path) as out, rasterio.open(result.gate_path) as gate:
        assert out.crs == "EPSG:32631" and out.dtypes[0] == "uint16" and out.count == 13
        assert out.nodata is None
        assert 100 < out.width < 256 and 100 < out.height < 256
        covered = transform_bounds(out.crs, "EPSG:4326", *out.bounds)
        assert covered[0] <= aoi[0] and covered[1] <= aoi[1]
        assert covered[2] >= aoi[2] and covered[3] >= aoi[3]
        np.testing.assert_array_equal(out.read(), _s2_pixels_under(s2, out))
        assert gate.transform == out.transform and (gate.read() == 1).all()


def test_sen1floods11_in_lonlat_keeps_int16_and_its_nodata(tmp_path, shared_data, identity):
    folder = shared_data / "sen1floods11_sample"
    s2 = folder / "S2" / "Spain_7370579_S2Hand.tif"
    s1 = tmp_path / "s1_with_hole.tif"
    with rasterio.open(folder / "S1" / "Spain_7370579_S1Hand.tif") as src:
        vv_vh = src.read()
        vv_vh[:, 200:220, 300:340] = np.nan          # a hole in the radar swath
        with rasterio.open(s1, "w", **src.profile) as dst:
            dst.write(vv_vh)
    with rasterio.open(s2) as src:
        aoi = src.window_bounds(((100, 300), (150, 400)))       # 200 x 250 px inside the chip
    result = _run(tmp_path, s2, s1, identity, aoi=aoi)
    with rasterio.open(result.out_path) as out, rasterio.open(result.gate_path) as gate:
        assert out.crs == "EPSG:4326" and out.dtypes[0] == "int16" and out.nodata == 0
        assert (out.height, out.width) == (200, 250)
        restored, expected, confidence = out.read(), _s2_pixels_under(s2, out), gate.read(1)
    hole = np.zeros((200, 250), bool)
    hole[100:120, 150:190] = True
    assert (restored[:, hole] == 0).all() and np.isnan(confidence[hole]).all()
    np.testing.assert_array_equal(restored[:, ~hole], expected[:, ~hole])


@pytest.mark.parametrize("tile", sorted(TERRAMIND_OFFSET))
def test_terramind_tiles_offset_detected_and_restored_in_their_own_utm_zone(tmp_path,
                                                                         shared_data, identity,
                                                                         tile):
    s2 = shared_data / "terramind_examples" / "S2L1C" / f"{tile}.tif"
    s1 = shared_data / "terramind_examples" / "S1RTC" / f"{tile}.tif"
    # the raw network's output, so the offset's round trip is what is compared (kept clear
    # pixels would be the input whatever the offset)
    result = _run(tmp_path, s2, s1, identity, raw_network=True)
    offset = TERRAMIND_OFFSET[tile]
    assert any(("+1000" in m) == bool(offset) and "offset" in m for m in result.messages)
    with rasterio.open(s2) as src, rasterio.open(result.out_path) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert out.dtypes[0] == "int16"
        dn = src.read().astype(np.int32)
        np.testing.assert_array_equal(out.read(), np.clip(dn - offset, 0, 10000) + offset)


def _s1_probe_onnx(path):
    """A model that returns S2 unchanged and the normalised VV band as its gate: the gate output
    is then exactly what the engine fed the network from S1."""
    inputs = [helper.make_tensor_value_info("s2", TensorProto.FLOAT, ["N", 13, "H", "W"]),
              helper.make_tensor_value_info("s1", TensorProto.FLOAT, ["N", 2, "H", "W"])]
    outputs = [helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["N", 13, "H", "W"]),
               helper.make_tensor_value_info("gate", TensorProto.FLOAT, ["N", 1, "H", "W"])]
    constants = [helper.make_tensor(name, TensorProto.INT64, [1], [value])
                 for name, value in (("zero", 0), ("one", 1))]
    nodes = [helper.make_node("Identity", ["s2"], ["restored"]),
             helper.make_node("Slice", ["s1", "zero", "one", "one"], ["gate"])]
    graph = helper.make_graph(nodes, "s1_probe", inputs, outputs, initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", tiny_models.OPSET)])
    model.ir_version = tiny_models.IR_VERSION
    helper.set_model_props(model, {SPEC_KEY: json.dumps(tiny_models.tiny_spec(64, 16))})
    save(model, str(path))
    return str(path)


def test_s1_in_another_crs_and_resolution_is_aligned_onto_the_s2_grid(tmp_path, shared_data):
    from osgeo import gdal

    s2 = shared_data / "sen12mscr" / "s2_cloudy" / SEN12
    original_s1 = shared_data / "sen12mscr" / "s1" / SEN12
    lonlat_s1 = tmp_path / "s1_lonlat.tif"
    gdal.UseExceptions()
    gdal.Warp(str(lonlat_s1), str(original_s1), dstSRS="EPSG:4326", xRes=0.0002, yRes=0.00013,
              resampleAlg="bilinear", dstNodata=float("nan"))
    result = _run(tmp_path, s2, lonlat_s1, _s1_probe_onnx(tmp_path / "probe.onnx"))

    with rasterio.open(result.gate_path) as gate, rasterio.open(lonlat_s1) as s1:
        fed_vv = gate.read(1)
        expected = np.full(fed_vv.shape, np.nan, np.float32)
        reproject(s1.read(1), expected, src_transform=s1.transform, src_crs=s1.crs,
                  src_nodata=np.nan, dst_transform=gate.transform, dst_crs=gate.crs,
                  dst_nodata=np.nan, resampling=Resampling.bilinear)
    expected = (np.clip(expected, -25, 0) + 25) / 25
    both = np.isfinite(fed_vv) & np.isfinite(expected)
    assert both.mean() > 0.9
    np.testing.assert_allclose(fed_vv[both], expected[both], atol=1e-3)
    # Back on its own grid after two resamplings, VV still matches the original pixel for pixel:
    # correlation about 0.98 here, 0.92 with a one-pixel shift, 0.79 with two.
    with rasterio.open(original_s1) as src, rasterio.open(result.gate_path) as gate:
        assert src.transform == gate.transform
        original = (np.clip(src.read(1), -25, 0) + 25) / 25
    correlation = np.corrcoef(original[both], fed_vv[both])[0, 1]
    assert correlation > 0.95, correlation


def test_default_model_on_the_sen12mscr_triplet(tmp_path, shared_data):
    try:
        spec = load_spec(resolve_model("default"))
    except UserError as exc:
        pytest.skip(f"no default model shipped yet: {exc}")
    s2 = shared_data / "sen12mscr" / "s2_cloudy" / SEN12
    s1 = shared_data / "sen12mscr" / "s1" / SEN12
    with rasterio.open(s2) as src:
        aoi = src.window_bounds(((64, 192), (64, 192)))
    result = _run(tmp_path, s2, s1, "default", aoi=aoi)
    assert result.model_name == spec.name
    with rasterio.open(result.out_path) as out, rasterio.open(result.gate_path) as gate:
        restored, confidence = out.read(), gate.read(1)
        assert out.dtypes[0] == "uint16" and (out.height, out.width) == (128, 128)
    assert 0 <= confidence.min() and confidence.max() <= 1
    assert restored.max() <= 10000 and restored.mean() > 50    # reflectance DN, not a blank


def test_s1_in_linear_power_is_recognised_and_fed_as_db(tmp_path, shared_data):
    s2 = shared_data / "sen12mscr" / "s2_cloudy" / SEN12
    s1_db = shared_data / "sen12mscr" / "s1" / SEN12
    s1_power = tmp_path / "s1_power.tif"
    with rasterio.open(s1_db) as src:
        db = src.read()
        with rasterio.open(s1_power, "w", **src.profile) as dst:
            dst.write((10 ** (db / 10)).astype(np.float32))
    probe = _s1_probe_onnx(tmp_path / "probe.onnx")
    result = _run(tmp_path, s2, s1_power, probe)
    assert any("linear power" in m for m in result.messages)
    with rasterio.open(result.gate_path) as gate:
        fed_vv = gate.read(1)
    np.testing.assert_allclose(fed_vv, (np.clip(db[0], -25, 0) + 25) / 25, atol=1e-5)
