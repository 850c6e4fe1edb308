"""The Processing algorithm `sar_cloud_removal:remove_clouds`, run through the real Processing
framework of QGIS 3.22 on small GeoTIFFs with identity ONNX models (restored == S2 input, gate
constant), so results can be asserted exactly."""
import numpy as np
import pytest
import rasterio
from qgis.core import (QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingParameterDefinition, QgsRasterLayer)

import georasters
import tiny_models
from plugin_fixtures import provider  # noqa: F401

ALG = "sar_cloud_removal:remove_clouds"



@pytest.fixture
def scene(tmp_path):
    """A 96 × 80 px S2/S1 pair, an identity model with gate 0.25, and an output folder."""
    s2, s1 = georasters.pair(tmp_path, rows=96, cols=80)
    model = tiny_models.constant_gate_onnx(tmp_path / "gate_quarter.onnx", 0.25, tile_size=64,
                                           overlap=16)
    out = tmp_path / "out"
    out.mkdir()
    return {"S2": str(s2), "S1": str(s1), "MODEL": str(model), "out": out}


def run(parameters, feedback=None):
    import processing
    return processing.run(ALG, parameters, feedback=feedback or QgsProcessingFeedback())


def params(scene, **extra):
    return {"S2": scene["S2"], "S1": scene["S1"], "MODEL": scene["MODEL"],
            "OUTPUT": str(scene["out"] / "restored.tif"),
            "GATE_OUTPUT": str(scene["out"] / "gate.tif"), **extra}


def test_provider_lists_the_algorithm_with_the_spec_parameters(provider):
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    assert provider.name() == "SAR Cloud Removal" and not provider.icon().isNull()
    assert alg is not None and alg.shortHelpString()
    definitions = {p.name(): p for p in alg.parameterDefinitions()}
    assert list(definitions) == ["S2", "S2_OFFSET", "S1", "EXTENT", "MODEL", "DEVICE",
                                 "TILE_SIZE", "OVERLAP", "RAW_NETWORK", "ADAPT", "ADAPT_SECONDS",
                                 "OUTPUT", "GATE_OUTPUT"]
    types = {name: p.type() for name, p in definitions.items()}
    assert types == {"S2": "raster", "S2_OFFSET": "enum", "S1": "raster", "EXTENT": "extent",
                     "MODEL": "file", "DEVICE": "enum", "TILE_SIZE": "number",
                     "OVERLAP": "number", "RAW_NETWORK": "boolean", "ADAPT": "boolean",
                     "ADAPT_SECONDS": "number", "OUTPUT": "rasterDestination", "GATE_OUTPUT": "rasterDestination"}
    optional = {n for n, p in definitions.items()
                if p.flags() & QgsProcessingParameterDefinition.FlagOptional}
    advanced = {n for n, p in definitions.items()
                if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert optional == {"EXTENT", "MODEL", "TILE_SIZE", "OVERLAP"}
    assert advanced == {"DEVICE", "TILE_SIZE", "OVERLAP", "RAW_NETWORK", "ADAPT_SECONDS"}
    assert definitions["DEVICE"].options() == ["Auto (GPU when available)", "GPU (CUDA)", "CPU"]
    # Runs in a background thread: nothing in it needs the GUI thread.
    assert not alg.flags() & alg.FlagNoThreading


def test_model_accepts_a_file_or_a_registered_name(provider):
    model = QgsApplication.processingRegistry().algorithmById(ALG).parameterDefinition("MODEL")
    context = QgsProcessingContext()
    for value in ("ibhfn", "/models/mine.onnx", "/models/mine.pt", None):
        assert model.checkValueIsAcceptable(value, context), value


def test_the_help_names_every_shipped_model(provider):
    """The seed networks are chosen by name in Processing as on the command line; the help says
    which names there are."""
    from sar_cloud_removal.core.model_spec import list_models

    help_text = QgsApplication.processingRegistry().algorithmById(ALG).shortHelpString()
    assert {"ibhfn", "dsen2cr", "mmcanet", "sgbafm"} <= set(list_models())
    for name in list_models():
        assert name in help_text, name
    assert "ibhfn (default)" in help_text


def test_restores_the_scene_and_reports_the_device(provider, scene):
    feedback = QgsProcessingFeedback()
    result = run(params(scene), feedback)
    with rasterio.open(scene["S2"]) as src, rasterio.open(result["OUTPUT"]) as restored, \
            rasterio.open(result["GATE_OUTPUT"]) as gate:
        assert restored.crs == src.crs and restored.transform == src.transform
        assert np.array_equal(restored.read(), src.read())
        assert gate.count == 1 and gate.shape == src.shape
        assert np.allclose(gate.read(1), 0.25)
    assert "onnxruntime on CPU: 80 × 96 px" in feedback.textLog()
    assert feedback.progress() == 100


def test_extent_with_its_crs_crops_the_output(provider, scene):
    # S2 grid: origin (600000, 5000000), 10 m pixels; a 30 × 20 px window from pixel (5, 10).
    extent = "600050,600350,4999700,4999900 [EPSG:32631]"
    result = run(params(scene, EXTENT=extent))
    with rasterio.open(scene["S2"]) as src, rasterio.open(result["OUTPUT"]) as restored:
        assert restored.shape == (20, 30)
        assert restored.transform.c == 600050 and restored.transform.f == 4999900
        expected = src.read(window=((10, 30), (5, 35)))
        assert np.array_equal(restored.read(), expected)


def test_tile_size_overlap_and_model_name_reach_the_engine(provider, scene):
    with pytest.raises(QgsProcessingException, match="overlap"):
        run(params(scene, TILE_SIZE=32, OVERLAP=40))
    with pytest.raises(QgsProcessingException, match="Unknown model 'no_such_model'"):
        run(params(scene, MODEL="no_such_model"))


def test_wrong_band_count_is_one_sentence_and_writes_nothing(provider, scene):
    with pytest.raises(QgsProcessingException) as raised:
        run(params(scene, S1=scene["S2"]))
    message = str(raised.value)
    assert "S1 image" in message and "13 bands" in message and message.count(". ") == 0
    assert georasters.files_in(scene["out"]) == set()


def test_output_that_is_not_a_geotiff_name_is_refused(provider, scene):
    with pytest.raises(QgsProcessingException, match=r"restored.img must end in .tif"):
        run(params(scene, OUTPUT=str(scene["out"] / "restored.img")))
    assert georasters.files_in(scene["out"]) == set()


def test_cancel_leaves_no_output(provider, scene):
    feedback = QgsProcessingFeedback()
    feedback.cancel()
    with pytest.raises(QgsProcessingException, match="cancelled"):
        run(params(scene), feedback)
    assert georasters.files_in(scene["out"]) == set()


def test_layer_that_is_not_a_file_is_refused(provider, scene, qgis_new_project):
    virtual = QgsRasterLayer("?crs=EPSG:32631&extent=600000,4999040,600800,5000000&width=80"
                             "&height=96&formula=1", "computed", "virtualraster")
    assert virtual.isValid()
    qgis_new_project.addMapLayer(virtual)
    with pytest.raises(QgsProcessingException, match="'computed' is not a raster file on disk"):
        run(params(scene, S1=virtual.id()))


def test_runs_as_a_background_task(provider, scene, qtbot):
    """The path the Toolbox dialog takes: a task on a worker thread, the GUI thread free."""
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    task = QgsProcessingAlgRunnerTask(alg, params(scene), context, feedback)
    outcome = {}
    task.executed.connect(lambda ok, results: outcome.update(ok=ok, results=results))
    QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: "ok" in outcome, timeout=30000)
    assert outcome["ok"], feedback.textLog()
    assert (scene["out"] / "restored.tif").is_file() and (scene["out"] / "gate.tif").is_file()


def test_loaded_outputs_are_styled_like_the_dock_results(provider, scene, qgis_new_project,
                                                          qgis_iface):
    import processing
    result = processing.runAndLoadResults(ALG, params(scene))
    layers = {layer.source(): layer for layer in qgis_new_project.mapLayers().values()}
    restored = layers[result["OUTPUT"]].renderer()
    assert restored.type() == "multibandcolor"
    assert (restored.redBand(), restored.greenBand(), restored.blueBand()) == (4, 3, 2)
    assert layers[result["GATE_OUTPUT"]].renderer().type() == "singlebandpseudocolor"


def test_gpu_choice_reaches_the_engine_and_falls_back_to_the_cpu(provider, scene):
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime can use CUDA, so there is no fallback to see")
    feedback = QgsProcessingFeedback()
    run(params(scene, DEVICE=1), feedback)
    assert "CUDA was requested" in feedback.textLog()
    assert "with onnxruntime on CPU" in feedback.textLog()
