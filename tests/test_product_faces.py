"""Sentinel-2 products and the S2 offset setting through the QGIS faces: the dock recognises a
loaded SAFE sub-layer as its product, Processing takes product paths and sub-layers, and both
pass S2_OFFSET (auto, 0, 1000) to the engine."""
import numpy as np
import pytest
import rasterio
from qgis.core import (QgsProcessingException, QgsProcessingFeedback,
                       QgsProject, QgsProviderRegistry, QgsRasterLayer)

import safe_builder
import tiny_models
from georasters import write_tif
from plugin_fixtures import plugin, provider, wait_for_run  # noqa: F401
from sar_cloud_removal.ui.dock import MODEL_FILE
from sar_cloud_removal.ui.run_inputs import build_request, s2_problem

ALG = "sar_cloud_removal:remove_clouds"
SEN12 = "ROIs2017_winter_112_p797.tif"
BRIGHT_DATE = "s2_ROIs2017_146_ImgNo_25_2018-11-02_patch_0.tif"   # thick cloud everywhere


@pytest.fixture(scope="module")
def product(shared_data, tmp_path_factory):
    with rasterio.open(shared_data / "sen12mscr" / "s2" / SEN12) as src:
        stack, transform = src.read(), src.transform
    bands = safe_builder.native_bands(stack)
    safe = safe_builder.write_safe(tmp_path_factory.mktemp("safe"), bands, 32631,
                                   (round(transform.c), round(transform.f)))
    return dict(safe=safe, zip=safe_builder.zip_product(safe),
                stack=safe_builder.upsampled(bands),
                s1=str(shared_data / "sen12mscr" / "s1" / SEN12))



def _run(parameters):
    import processing
    return processing.run(ALG, parameters, feedback=QgsProcessingFeedback())


def _params(tmp_path, s2, s1, **extra):
    model = tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=64, overlap=16)
    return {"S2": s2, "S1": s1, "MODEL": str(model), "OUTPUT": str(tmp_path / "restored.tif"),
            "GATE_OUTPUT": str(tmp_path / "gate.tif"), **extra}


def _sublayers(path):
    """The sub-layers QGIS adds when a user drops the product on the map."""
    return [QgsRasterLayer(detail.uri(), detail.name(), "gdal")
            for detail in QgsProviderRegistry.instance().querySublayers(str(path))]


@pytest.mark.parametrize("form", ["safe", "zip", "mtd"])
def test_processing_takes_a_product_path(provider, product, tmp_path, form):
    s2 = {"safe": product["safe"], "zip": product["zip"],
          "mtd": product["safe"] / "MTD_MSIL1C.xml"}[form]
    result = _run(_params(tmp_path, str(s2), product["s1"]))
    with rasterio.open(result["OUTPUT"]) as out:
        np.testing.assert_array_equal(out.read(), product["stack"])


def test_processing_takes_a_loaded_product_sub_layer(provider, product, tmp_path,
                                                     qgis_new_project):
    # QGIS 3.22 lists a zipped product's band files; GDAL's own name for the 10 m sub-dataset
    # (what the Data Source Manager adds) works as well.
    layers = _sublayers(product["zip"])
    b04 = next(layer for layer in layers if layer.source().endswith("_B04.jp2"))
    assert b04.isValid() and b04.bandCount() == 1
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), \
            rasterio.open(product["zip"]) as gdal_product:
        ten_name = next(name for name in gdal_product.subdatasets if ":10m:" in name)
    ten = QgsRasterLayer(ten_name, "10 m", "gdal")
    assert ten.isValid() and ten.bandCount() == 4
    QgsProject.instance().addMapLayers([b04, ten])
    result = _run(_params(tmp_path, b04.id(), product["s1"]))
    with rasterio.open(result["OUTPUT"]) as out:
        np.testing.assert_array_equal(out.read(), product["stack"])
    result = _run(_params(tmp_path, ten.id(), product["s1"]))
    with rasterio.open(result["OUTPUT"]) as out:
        assert out.count == 13
        np.testing.assert_array_equal(out.read(), product["stack"])


def test_processing_s2_offset_choices_reach_the_engine(provider, shared_data, tmp_path):
    """A scene too cloudy to tell: auto stops with one sentence asking for the setting,
    0 runs it, and 1000 subtracts 1000."""
    s2 = str(shared_data / "sen12mscrts_s2_timeseries" / BRIGHT_DATE)
    with rasterio.open(s2) as src:
        dn, crs, transform = src.read(), src.crs, src.transform
    s1 = write_tif(tmp_path / "s1.tif", np.full((2, 256, 256), -12.0, np.float32),
                   crs=crs.to_string(), transform=transform)
    with pytest.raises(QgsProcessingException, match="Cannot tell .* set the S2 offset to 1000"):
        _run(_params(tmp_path, s2, str(s1)))
    assert not (tmp_path / "restored.tif").exists()
    for choice, offset in ((1, 0), (2, 1000)):
        result = _run(_params(tmp_path, s2, str(s1), S2_OFFSET=choice,
                              OUTPUT=str(tmp_path / f"r{offset}.tif"),
                              GATE_OUTPUT=str(tmp_path / f"g{offset}.tif")))
        with rasterio.open(result["OUTPUT"]) as out:
            restored = out.read().astype(int)
        np.testing.assert_array_equal(restored, np.clip(dn.astype(int) - offset, 0, 10000)
                                      + offset)


def test_processing_refuses_an_l2a_export(provider, shared_data, product, tmp_path):
    folder = next((shared_data / "bigearthnet_example" / "BigEarthNet-S2-Example").iterdir())
    with pytest.raises(QgsProcessingException, match="Level-2A .* needs Level-1C"):
        _run(_params(tmp_path, str(folder), product["s1"]))
    assert not (tmp_path / "restored.tif").exists()


def test_the_dock_recognises_a_loaded_safe_sub_layer_as_its_product(plugin, product, tmp_path):
    dock = plugin.show_dock()
    dock.output_folder.setFilePath(str(tmp_path / "results"))
    s1 = QgsRasterLayer(product["s1"], "s1")
    layers = _sublayers(product["safe"] / "MTD_MSIL1C.xml")
    QgsProject.instance().addMapLayers(layers + [s1])
    s2 = dock.s2_combo.currentLayer()
    assert ":10m:" in s2.source()               # the 10 m sub-layer is picked among the four
    assert s2_problem(s2) == "" and dock.s1_combo.currentLayer() is s1
    assert all(s2_problem(layer) == "" for layer in layers)
    assert dock.run_button.isEnabled()
    assert dock.status_label.text() == "Ready: 252 × 252 pixels will be processed."

    dock.s2_offset_combo.setCurrentIndex(2)
    request = build_request(dock.current_inputs(), QgsProject.instance())
    assert request.s2_path == str(product["safe"] / "MTD_MSIL1C.xml")
    assert request.s2_offset == "1000"
    assert request.out_path.endswith("S2A_MSIL1C_20190402T103021_N0209_R108_T31UFQ_"
                                     "20190402T110907_cloudfree.tif")
    dock.s2_combo.setLayer(s1)
    dock.s2_combo.setLayer(s2)
    assert dock.s2_offset_combo.currentData() == "auto"   # a new S2 choice starts from auto


def test_the_dock_runs_a_product_end_to_end(plugin, product, tmp_path, qtbot):
    dock = plugin.show_dock()
    dock.output_folder.setFilePath(str(tmp_path / "results"))
    model = tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=64, overlap=16)
    dock.model_combo.setCurrentIndex(dock.model_combo.findData(MODEL_FILE))
    dock.model_file.setFilePath(str(model))
    layers = _sublayers(product["zip"])   # in QGIS 3.22: the product's band files
    QgsProject.instance().addMapLayers([layer for layer in layers if layer.isValid()]
                                       + [QgsRasterLayer(product["s1"], "s1")])
    assert dock.s2_combo.currentLayer().source().endswith(".jp2")
    assert dock.run_button.isEnabled(), dock.status_label.text()
    dock.run_button.click()
    wait_for_run(plugin, qtbot)
    [restored] = (tmp_path / "results").glob("*_cloudfree.tif")
    with rasterio.open(restored) as out:
        np.testing.assert_array_equal(out.read(), product["stack"])


def test_a_level_2a_sub_layer_or_12_band_layer_is_explained(plugin, product, tmp_path,
                                                            qgis_new_project):
    l2a = safe_builder.write_safe(tmp_path, safe_builder.native_bands(product["stack"]), 32631,
                                  (704340, 5631400), level="L2A")
    band = QgsRasterLayer(str(next(l2a.rglob("*_B04.jp2"))), "B04")
    assert band.isValid()
    assert "Level-2A product" in s2_problem(band)
    twelve = write_tif(tmp_path / "twelve.tif", product["stack"][:12])
    assert "12 bands, as a Level-2A" in s2_problem(QgsRasterLayer(str(twelve), "twelve"))


def test_one_click_on_a_product_sub_layer_restores_the_product(plugin, product, tmp_path,
                                                                qtbot):
    from sar_cloud_removal.ui import settings

    settings.set_output_folder(str(tmp_path / "results"))
    settings.set_model(str(tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=64,
                                                     overlap=16)))
    layers = _sublayers(product["safe"] / "MTD_MSIL1C.xml")
    s1 = QgsRasterLayer(product["s1"], "s1")
    QgsProject.instance().addMapLayers(layers + [s1])
    sixty = next(layer for layer in layers if ":60m:" in layer.source())
    plugin.remove_clouds_from(sixty)
    wait_for_run(plugin, qtbot)
    [restored] = (tmp_path / "results").glob("S2A_MSIL1C_*_cloudfree.tif")
    with rasterio.open(restored) as out:
        assert (out.width, out.height) == (252, 252)    # the product's 10 m grid
        np.testing.assert_array_equal(out.read(), product["stack"])
