"""Sentinel-2 as downloaded: SAFE folders, their zips, MTD_MSIL1C.xml, GDAL's SENTINEL2
sub-dataset names and one-file-per-band exports, read as the 13-band 10 m stack without a copy;
L2A refused. The products are written in the real format from real pixels (tests/safe_builder)."""
import json
import shutil

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import safe_builder
import tiny_models
from georasters import files_in, write_tif
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds
from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.grid import open_raster
from sar_cloud_removal.core.s2_products import product_of_subdataset

SEN12 = "ROIs2017_winter_112_p797.tif"
OFFSET_TILE = "282D_485L_3_3"   # TerraMind tile that carries the +1000 offset


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.crs, src.transform


@pytest.fixture(scope="module")
def pre_2022(shared_data, tmp_path_factory):
    """An L1C SAFE of baseline 02.09 made of the SEN12MS-CR scene's real pixels, its zip, the
    10 m stack it must read as, and the real S1 of the same place."""
    stack, crs, transform = _read(shared_data / "sen12mscr" / "s2" / SEN12)
    bands = safe_builder.native_bands(stack)
    origin = (round(transform.c), round(transform.f))
    safe = safe_builder.write_safe(tmp_path_factory.mktemp("pre"), bands, 32631, origin)
    return dict(safe=safe, zip=safe_builder.zip_product(safe), stack=safe_builder.upsampled(bands),
                bands=bands, origin=origin, s1=shared_data / "sen12mscr" / "s1" / SEN12)


@pytest.fixture(scope="module")
def post_2022(shared_data, tmp_path_factory):
    """An L1C SAFE of baseline 04.00 (RADIO_ADD_OFFSET -1000) from a real offset tile."""
    stack, crs, transform = _read(shared_data / "terramind_examples" / "S2L1C" /
                                  f"{OFFSET_TILE}.tif")
    bands = safe_builder.native_bands(stack)
    safe = safe_builder.write_safe(tmp_path_factory.mktemp("post"), bands, crs.to_epsg(),
                                   (transform.c, transform.f), tile="18TWL",
                                   version=safe_builder.POST_2022, offset=1000)
    return dict(safe=safe, stack=safe_builder.upsampled(bands), crs=crs,
                s1=shared_data / "terramind_examples" / "S1RTC" / f"{OFFSET_TILE}.tif")


def _check_stack(dataset, expected, origin):
    assert dataset.count == 13 and dataset.dtypes[0] == "uint16"
    assert dataset.descriptions[:3] == ("B1", "B2", "B3") and dataset.descriptions[8] == "B8A"
    assert (dataset.transform.a, dataset.transform.e) == (10, -10)
    assert (dataset.transform.c, dataset.transform.f) == origin
    np.testing.assert_array_equal(dataset.read(), expected)


def test_a_safe_folder_its_zip_and_its_metadata_file_read_as_the_13_band_10m_stack(pre_2022):
    product = pre_2022["safe"]
    for path in (product, pre_2022["zip"], product / "MTD_MSIL1C.xml"):
        with open_raster(path, "S2") as dataset:
            assert dataset.name == str(path)
            _check_stack(dataset, pre_2022["stack"], pre_2022["origin"])
            assert dataset.tags()["PROCESSING_BASELINE"] == "02.09"
            assert "RADIO_ADD_OFFSET" not in dataset.tags()
    # Nothing was written: the product holds what the builder put there, and no stack copy.
    assert not list(product.rglob("*.tif")) and not list(product.rglob("*.vrt"))


def test_the_native_bands_come_back_at_their_own_resolution(pre_2022):
    """The 20 m and 60 m bands are the product's pixels repeated, not interpolated."""
    with open_raster(pre_2022["safe"], "S2") as dataset:
        b5 = dataset.read(5)
        b10 = dataset.read(11)
    np.testing.assert_array_equal(b5[::2, ::2], pre_2022["bands"]["B05"])
    np.testing.assert_array_equal(b10[::6, ::6], pre_2022["bands"]["B10"])


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_gdal_sentinel2_driver_sees_the_same_product(pre_2022):
    """The builder writes the real format: GDAL's SENTINEL2 driver (what QGIS uses) opens it
    and its 10 m and 20 m sub-datasets hold the bands the stack holds."""
    mtd = pre_2022["safe"] / "MTD_MSIL1C.xml"
    with rasterio.open(mtd) as product:
        assert product.driver == "SENTINEL2"
        names = product.subdatasets
    ten = next(name for name in names if ":10m:" in name)
    twenty = next(name for name in names if ":20m:" in name)
    assert product_of_subdataset(ten) == str(mtd)
    with rasterio.open(ten) as sub10, rasterio.open(twenty) as sub20, \
            open_raster(ten, "S2") as stack:
        assert sub10.count == 4
        np.testing.assert_array_equal(sub10.read(1), stack.read(4))     # B4
        np.testing.assert_array_equal(sub10.read(4), stack.read(8))     # B8
        np.testing.assert_array_equal(sub20.read(4), stack.read(9)[::2, ::2])   # B8A
    zip_name = ten.replace(str(pre_2022["safe"].parent), "/vsizip/" + str(pre_2022["zip"]))
    assert product_of_subdataset(zip_name) == str(pre_2022["zip"])


def test_a_post_2022_product_states_its_offset(post_2022):
    with open_raster(post_2022["safe"], "S2") as dataset:
        tags = dataset.tags()
        assert tags["PROCESSING_BASELINE"] == "04.00" and tags["RADIO_ADD_OFFSET"] == "-1000"
        assert dataset.crs == post_2022["crs"]
        np.testing.assert_array_equal(dataset.read(), post_2022["stack"])


@pytest.mark.parametrize("form", ["safe", "zip"])
def test_products_restore_end_to_end_with_the_offset_from_metadata(tmp_path, pre_2022,
                                                                   post_2022, form):
    model = str(tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=64, overlap=16))
    cases = [(pre_2022, 0)] + ([(post_2022, 1000)] if form == "safe" else [])
    for case, offset in cases:
        out = tmp_path / f"restored_{offset}.tif"
        result = remove_clouds(RemovalRequest(str(case[form]), str(case["s1"]), str(out),
                                              model=model))
        note = next(m for m in result.messages if "offset" in m)
        assert f"offset {offset} subtracted, from the " in note and "MTD_MSIL1C.xml" in note
        with rasterio.open(out) as restored:
            assert restored.count == 13 and restored.dtypes[0] == "uint16"
            # The identity network gives back the input: the stack, offset and all.
            expected = np.clip(case["stack"].astype(int) - offset, 0, 10000) + offset
            np.testing.assert_array_equal(restored.read(), expected)


@pytest.fixture(scope="module")
def gee_export(shared_data):
    folder = shared_data / "ssl4eo_s2l1c_gee" / "000000"
    return next(folder.iterdir())


def test_an_earth_engine_band_export_reads_as_the_stack_on_its_10m_grid(gee_export):
    with open_raster(gee_export, "S2") as dataset:
        assert dataset.count == 13 and (dataset.width, dataset.height) == (264, 264)
        with rasterio.open(gee_export / "B2.tif") as b2:
            assert dataset.transform == b2.transform and dataset.crs == b2.crs
            np.testing.assert_array_equal(dataset.read(2), b2.read(1))
        with rasterio.open(gee_export / "B8A.tif") as b8a:
            native = b8a.read(1)
        stacked = dataset.read(9)
        # The 20 m grid sits half a 10 m pixel up-left of the 10 m one: 10 m pixel (2i+1, 2j+1)
        # lies in 20 m pixel (i+1, j+1).
        np.testing.assert_array_equal(stacked[1:-1:2, 1:-1:2], native[1:, 1:])
        tags = dataset.tags()
        assert tags["PROCESSING_BASELINE"] == "02.06" and "metadata.json" in \
            tags["S2_METADATA_SOURCE"]


def test_a_band_export_restores_end_to_end(tmp_path, gee_export, shared_data):
    """Real S1 pixels placed on the export's grid (no S1 of that place exists here)."""
    with rasterio.open(gee_export / "B2.tif") as b2:
        crs, transform = b2.crs, b2.transform
    s1, _, _ = _read(shared_data / "sen12mscr" / "s1" / SEN12)
    s1_path = write_tif(tmp_path / "s1.tif", s1, crs=crs.to_string(),
                        transform=from_origin(transform.c, transform.f, transform.a * 264 / 256,
                                              -transform.e * 264 / 256))
    model = str(tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=64, overlap=16))
    result = remove_clouds(RemovalRequest(str(gee_export), str(s1_path),
                                          str(tmp_path / "o.tif"), model=model))
    assert any("processing baseline 02.06 in the export's metadata.json" in m
               for m in result.messages)
    with rasterio.open(tmp_path / "o.tif") as out, open_raster(gee_export, "S2") as stack:
        assert (out.width, out.height) == (264, 264) and out.nodata == 0
        expected = stack.read()
        expected[:, (expected == 0).any(axis=0)] = 0   # the export's zero edges are nodata
        np.testing.assert_array_equal(out.read(), expected)


def test_the_cli_takes_a_zipped_product(tmp_path, pre_2022, cli):
    model = tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=64, overlap=16)
    done = cli("remove", "--s2", pre_2022["zip"], "--s1", pre_2022["s1"], "--out",
               tmp_path / "o.tif", "--model", model, "--quiet")
    assert done.returncode == 0, done.stderr
    assert {"o.tif", "o_gate.tif"} <= files_in(tmp_path)


def test_level_2a_products_and_exports_are_refused(tmp_path, pre_2022, shared_data):
    l2a = safe_builder.write_safe(tmp_path, pre_2022["bands"], 32631, pre_2022["origin"],
                                  level="L2A")
    bigearthnet = next((shared_data / "bigearthnet_example" / "BigEarthNet-S2-Example").iterdir())
    for path in (l2a, l2a / "MTD_MSIL2A.xml", bigearthnet,
                 f"SENTINEL2_L2A:{l2a}/MTD_MSIL2A.xml:10m:EPSG_32631"):
        with pytest.raises(UserError, match="Level-2A .* needs Level-1C .*dataspace") as caught:
            open_raster(path, "S2")
        assert len(str(caught.value).splitlines()) == 1


def test_broken_and_incomplete_products_get_one_sentence(tmp_path, pre_2022, gee_export):
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(pre_2022["zip"].read_bytes()[:5000])
    no_product = tmp_path / "other.zip"
    shutil.make_archive(str(no_product.with_suffix("")), "zip", gee_export)
    partial = tmp_path / "bands"
    shutil.copytree(gee_export, partial)
    (partial / "B11.tif").unlink()
    doubled = tmp_path / "doubled"
    shutil.copytree(gee_export, doubled)
    shutil.copy(doubled / "B2.tif", doubled / "B02_copy.tif")
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "readme.txt").write_text("hello")
    missing_band = tmp_path / "missing_band"
    shutil.copytree(pre_2022["safe"], missing_band / pre_2022["safe"].name)
    next((missing_band / pre_2022["safe"].name).rglob("*_B03.jp2")).unlink()
    cases = [(damaged, "damaged"), (no_product, "no Sentinel-2 L1C product"),
             (partial, "lacks band file.* B11"), (doubled, "two files for band B2"),
             (unrelated, "neither a Sentinel-2 product"), (tmp_path / "gone.SAFE", "not exist"),
             (missing_band / pre_2022["safe"].name, "band B3 .* cannot be read")]
    for path, match in cases:
        with pytest.raises(UserError, match=match) as caught:
            open_raster(path, "S2")
        assert len(str(caught.value).splitlines()) == 1


def test_an_earth_engine_harmonized_export_says_its_offset_is_removed(tmp_path, gee_export):
    harmonized = tmp_path / "export"
    shutil.copytree(gee_export, harmonized)
    meta = json.loads((harmonized / "metadata.json").read_text())
    meta["id"] = meta["id"].replace("COPERNICUS/S2/", "COPERNICUS/S2_HARMONIZED/")
    meta["properties"]["PROCESSING_BASELINE"] = "04.00"
    (harmonized / "metadata.json").write_text(json.dumps(meta))
    with open_raster(harmonized, "S2") as dataset:
        assert dataset.tags()["RADIO_ADD_OFFSET"] == "0"


def test_runs_give_gdal_a_real_block_cache(tmp_path, pre_2022):
    """GDAL_CACHEMAX reaches GDAL in bytes through rasterio: the engine's 128 MB must not be
    128 bytes, which left no cache and decoded a product's JPEG2000 tiles once per strip."""
    from osgeo import gdal

    from sar_cloud_removal.core.engine import GDAL_CACHE_MB

    seen = []
    model = str(tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=64, overlap=16))
    remove_clouds(RemovalRequest(str(pre_2022["safe"]), str(pre_2022["s1"]),
                                 str(tmp_path / "o.tif"), model=model),
                  progress=lambda fraction, message: seen.append(gdal.GetCacheMax()))
    assert seen and set(seen[:-1]) == {GDAL_CACHE_MB * 2**20}
