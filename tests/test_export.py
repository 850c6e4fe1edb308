"""Model files as the engine reads them: ONNX export matching torch on real Sentinel data, the spec
carried in both formats, the `export` command, and the shipped default model."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sar_cloud_removal.cli import main
from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.model_spec import (SPEC_KEY, WEIGHTS_DIR, load_spec, make_spec,
                                               read_checkpoint, resolve_model)
from sar_cloud_removal.models.export import (export_onnx, initial_network, load_network,
                                             save_checkpoint)
from sar_cloud_removal.models.registry import resolved_config

TOLERANCE = 1e-4


def real_batch(triplet, crops):
    """(s2, s1) float32 arrays of real cloudy S2 + S1 crops, one per (row, col, height, width)."""
    def cut(image, r, c, h, w):
        return image[:, r:r + h, c:c + w]
    return (np.stack([cut(triplet.cloudy, *crop) for crop in crops]),
            np.stack([cut(triplet.s1, *crop) for crop in crops]))


def run_onnx(path, s2, s1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["restored", "gate"], {"s2": s2, "s1": s1})


def run_torch(network, s2, s1):
    with torch.no_grad():
        out = network(torch.from_numpy(s2), torch.from_numpy(s1))
    return out.restored.numpy(), out.gate.numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default IB-HFN, untrained (seed 0), written as model.onnx + model.pt."""
    folder = tmp_path_factory.mktemp("export")
    config = resolved_config("ibhfn", {})
    network = initial_network("ibhfn", config, seed=0).eval()
    spec = make_spec("test-ibhfn", "0.0.1", "ibhfn", config, size_multiple=network.size_multiple)
    export_onnx(network, spec, folder / "model.onnx")
    save_checkpoint(network, spec, folder / "model.pt")
    return network, spec, folder


def test_onnx_matches_torch_on_real_data_for_other_batch_and_tile_sizes(exported, real_triplet):
    network, _, folder = exported
    s2, s1 = real_batch(real_triplet, [(0, 0, 64, 128), (100, 40, 64, 128), (192, 128, 64, 128)])
    assert network.training is False
    for got, want in zip(run_onnx(folder / "model.onnx", s2, s1), run_torch(network, s2, s1)):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= TOLERANCE


@pytest.mark.parametrize("gate_scales", [False, True])
def test_the_masked_network_exports_for_any_tile_size(gate_scales, real_triplet, tmp_path):
    """Masking and scene context pool, and the multi-scale gate upsamples, by factors, never to
    the export's own size: the ONNX graph matches torch on tiles of other sizes (context
    weights and the gate made non-trivial, as training leaves them)."""
    config = resolved_config("ibhfn", {"width": 8, "sar_width": 4, "mask_optical": True,
                                       "scene_context": True, "detached_gates": True,
                                       "output_shut": 0.3, "gate_scales": gate_scales})
    network = initial_network("ibhfn", config, seed=0).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        torch.nn.init.normal_(network.scene_context.mlp[-1].weight, std=0.1)
        torch.nn.init.normal_(network.gate.local[-1].weight, std=20.0)
        network.gate.local[-1].bias.fill_(0.0)
        for branch in getattr(network.gate, "scales", []):
            torch.nn.init.normal_(branch[-1].weight, std=0.5)
    spec = make_spec("masked", "0", "ibhfn", config, size_multiple=network.size_multiple)
    export_onnx(network, spec, tmp_path / "masked.onnx")
    for crops in ([(0, 0, 64, 128), (100, 40, 64, 128)], [(8, 16, 128, 192)]):
        s2, s1 = real_batch(real_triplet, crops)
        got, want = run_onnx(tmp_path / "masked.onnx", s2, s1), run_torch(network, s2, s1)
        gate = want[1]
        assert gate.min() < 0.05 and np.ptp(gate) > 0.1    # the masking really masks
        for g, w in zip(got, want):
            assert g.shape == w.shape and np.abs(g - w).max() <= TOLERANCE


@pytest.mark.parametrize("architecture, config", [
    ("identity", {}), ("dsen2cr", {"width": 4, "blocks": 1}),
    ("ibhfn", {"width": 4, "sar_width": 2, "use_gate": False, "use_bottleneck": False})])
def test_every_architecture_exports_with_both_inputs(architecture, config, real_triplet,
                                                      tmp_path):
    network = initial_network(architecture, config).eval()
    spec = make_spec("any", "0", architecture, config, size_multiple=network.size_multiple)
    export_onnx(network, spec, tmp_path / "model.onnx")
    s2, s1 = real_batch(real_triplet, [(8, 16, 32, 48)])
    for got, want in zip(run_onnx(tmp_path / "model.onnx", s2, s1), run_torch(network, s2, s1)):
        assert np.abs(got - want).max() <= TOLERANCE


def test_onnx_graph_has_the_contract_names_and_free_axes(exported):
    graph = onnx.load(str(exported[2] / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["s2", "s1"]
    assert [o.name for o in graph.output] == ["restored", "gate"]
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims[:1] + dims[2:]] == ["batch", "height", "width"]


def test_both_files_carry_the_same_valid_spec(exported):
    _, spec, folder = exported
    model = onnx.load(str(folder / "model.onnx"))
    stored = {p.key: p.value for p in model.metadata_props}
    assert json.loads(stored[SPEC_KEY]) == spec
    loaded = load_spec(resolve_model(folder / "model.onnx"))    # checks .onnx and .pt agree
    assert (loaded.name, loaded.size_multiple, loaded.config) == ("test-ibhfn", 8, spec["config"])


def test_checkpoint_rebuilds_the_same_network(exported, real_triplet):
    network, spec, folder = exported
    rebuilt, rebuilt_spec = load_network(folder / "model.pt")
    assert rebuilt_spec == spec
    s2, s1 = real_batch(real_triplet, [(32, 32, 64, 64)])
    for got, want in zip(run_torch(rebuilt, s2, s1), run_torch(network, s2, s1)):
        assert np.array_equal(got, want)


def test_a_spec_the_network_cannot_honour_is_refused_before_writing(tmp_path):
    network = initial_network("ibhfn", {"width": 4, "sar_width": 2})
    spec = make_spec("bad", "0", "ibhfn", {"width": 4, "sar_width": 2}, size_multiple=4)
    with pytest.raises(UserError, match="needs multiples of 8"):
        export_onnx(network, spec, tmp_path / "bad.onnx")
    with pytest.raises(UserError, match="needs multiples of 8"):
        save_checkpoint(network, spec, tmp_path / "bad.pt")
    assert list(tmp_path.iterdir()) == []


def test_export_command_renames_and_retiles_a_checkpoint(tmp_path, cli):
    config = resolved_config("ibhfn", {"width": 4, "sar_width": 2})
    network = initial_network("ibhfn", config)
    save_checkpoint(network, make_spec("small", "0.0.1", "ibhfn", config), tmp_path / "run.pt")
    result = cli("export", "--checkpoint", tmp_path / "run.pt", "--out", tmp_path / "mine.onnx",
                 "--name", "mine", "--version", "2.0.0", "--tile-size", "512", "--overlap", "64")
    assert result.returncode == 0, result.stderr
    spec = load_spec(resolve_model(tmp_path / "mine.onnx"))       # .onnx and .pt agree
    assert (spec.name, spec.version, spec.tile_size, spec.overlap) == ("mine", "2.0.0", 512, 64)
    assert spec.config == config
    saved = read_checkpoint(tmp_path / "mine.pt")["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in network.state_dict().items())
    # keep-clear levels: set by --keep-clear, then carried by a re-export that does not name them
    result = cli("export", "--checkpoint", tmp_path / "mine.pt", "--out", tmp_path / "k.onnx",
                 "--keep-clear", "0.65,0.75")
    assert result.returncode == 0, result.stderr
    result = cli("export", "--checkpoint", tmp_path / "k.pt", "--out", tmp_path / "again.onnx")
    assert result.returncode == 0, result.stderr
    spec = load_spec(resolve_model(tmp_path / "again.onnx"))
    assert (spec.keep_none, spec.keep_full, spec.tile_size) == (0.65, 0.75, 512)


def test_export_command_changes_a_setting_that_changes_no_weight_and_refuses_others(tmp_path,
                                                                                   cli):
    config = resolved_config("ibhfn", {"width": 4, "sar_width": 2})
    network = initial_network("ibhfn", config)
    save_checkpoint(network, make_spec("small", "0.0.1", "ibhfn", config), tmp_path / "run.pt")
    result = cli("export", "--checkpoint", tmp_path / "run.pt", "--out", tmp_path / "s.onnx",
                 "--config", '{"output_shut": 0.3}')
    assert result.returncode == 0, result.stderr
    spec = load_spec(resolve_model(tmp_path / "s.onnx"))
    assert spec.config == {**config, "output_shut": 0.3}
    saved = read_checkpoint(tmp_path / "s.pt")["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in network.state_dict().items())
    refused = cli("export", "--checkpoint", tmp_path / "run.pt", "--out", tmp_path / "w.onnx",
                  "--config", '{"width": 8}')
    assert refused.returncode == 2 and "do not fit" in refused.stderr
    assert not (tmp_path / "w.onnx").exists()


def test_export_command_writes_an_untrained_network_alone_when_asked(tmp_path, capsys):
    out = tmp_path / "small.onnx"
    code = main(["export", "--untrained", "dsen2cr", "--config", '{"width": 4, "blocks": 1}',
                 "--onnx-only", "--out", str(out)])
    assert code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["small.onnx"]
    spec = load_spec(resolve_model(out))
    assert (spec.name, spec.architecture, spec.config) == \
        ("small", "dsen2cr", {"width": 4, "blocks": 1, "residual_scale": 0.1, "mask_head": True})


@pytest.mark.parametrize("arguments, message", [
    (["--checkpoint", "missing.pt"], "does not exist"),
    (["--checkpoint", "missing.pt", "--config", "{}"], "does not exist"),
    (["--untrained", "ibhfn", "--tile-size", "100"], "not a multiple of its size_multiple 8"),
    (["--untrained", "ibhfn", "--config", "[4]"], "--config must be a JSON object"),
    (["--untrained", "ibhfn", "--config", '{"colour": 1}'], "no setting colour"),
    (["--untrained", "ibhfn", "--keep-clear", "0.9,0.8"], "--keep-clear must be two gate levels"),
    (["--untrained", "ibhfn", "--keep-clear", "0.9"], "--keep-clear must be two gate levels"),
])
def test_export_command_refuses_bad_input_in_one_line_and_writes_nothing(
        arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", *arguments, "--out", str(tmp_path / "x.onnx")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    assert list(tmp_path.iterdir()) == []


def test_shipped_default_model_is_valid_and_its_two_files_agree(real_triplet):
    files = resolve_model("default")
    assert files.onnx_path == WEIGHTS_DIR / "ibhfn.onnx"
    assert files.torch_path == WEIGHTS_DIR / "ibhfn.pt"
    spec = load_spec(files)
    # as the model card says: 512 px tiles (1.3 tile pixels per output pixel instead of 1.8 at
    # 256, scoring as well on the 512 px Sen1Floods11 scene) and a 64 px overlap (32 left a
    # faint strip where tiles blend under thick cloud); masked optical features, output_shut
    # 0.7, SAR at full resolution (4.0.0) and keep-clear levels chosen on the selection scenes
    assert (spec.name, spec.architecture, spec.tile_size, spec.overlap) == \
        ("ibhfn", "ibhfn", 512, 64)
    assert {k: spec.config[k] for k in ("mask_optical", "scene_context", "detached_gates",
                                        "gate_scales", "sar_full_res", "output_shut")} == \
        {"mask_optical": True, "scene_context": True, "detached_gates": True,
         "gate_scales": True, "sar_full_res": True, "output_shut": 0.7}
    assert (spec.keep_none, spec.keep_full) == (0.6, 0.7)
    network, torch_spec = load_network(files.torch_path)
    assert torch_spec == spec.raw
    s2, s1 = real_batch(real_triplet, [(0, 0, 256, 256)])
    for got, want in zip(run_onnx(files.onnx_path, s2, s1), run_torch(network, s2, s1)):
        assert np.abs(got - want).max() <= TOLERANCE
