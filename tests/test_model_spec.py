"""The model spec: validation, name resolution, and reading specs from real model files."""
import json
import re
import subprocess
import sys

import onnx
import pytest
import torch
from onnx import helper

import tiny_models
from sar_cloud_removal.core import model_spec
from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.backends import create_backend
from sar_cloud_removal.core.model_spec import (DEFAULT_MODEL, S2_BANDS, SPEC_KEY, list_models,
                                               load_spec, make_spec, resolve_model, validate_spec)
from sar_cloud_removal.core.onnx_metadata import read_metadata


def assert_one_sentence(message: str):
    """A UserError is shown as it is: one line, one sentence, ending with a full stop."""
    assert "\n" not in message
    assert message.endswith(".")
    assert not re.search(r"[.;]\s+[A-Z]", message), message


def spec_with(**changes) -> dict:
    raw = make_spec("tiny", "1.0.0", "identity", {}, tile_size=64, overlap=16, size_multiple=8)
    raw.update(changes)
    return raw


def spec_without(key) -> dict:
    raw = spec_with()
    del raw[key]
    return raw


def test_make_spec_validates_to_the_values_given():
    spec = validate_spec(make_spec("ibhfn", "1.2.0", "ibhfn", {"width": 32}, tile_size=128,
                                   overlap=24, size_multiple=8), "m.onnx")
    assert (spec.name, spec.version, spec.architecture) == ("ibhfn", "1.2.0", "ibhfn")
    assert (spec.tile_size, spec.overlap, spec.size_multiple) == (128, 24, 8)
    assert spec.s2_bands == S2_BANDS and len(S2_BANDS) == 13 and spec.s1_bands == ("VV", "VH")
    assert spec.s2_scale == 10000 and spec.s1_db_range == (-25, 0)
    assert spec.config == {"width": 32}
    assert spec.inputs == {"s2": "s2", "s1": "s1"}
    assert spec.outputs == {"restored": "restored", "gate": "gate"}
    assert json.loads(json.dumps(spec.raw)) == spec.raw


def test_keep_clear_levels_default_to_the_engine_s_and_travel_in_the_spec():
    from sar_cloud_removal.core.keep_clear import KEEP_FULL, KEEP_NONE

    plain = validate_spec(spec_with(), "m")
    assert (plain.keep_none, plain.keep_full) == (KEEP_NONE, KEEP_FULL)
    raw = make_spec("tiny", "1.0.0", "identity", {}, tile_size=64, overlap=16,
                    keep_clear=(0.65, 0.75))
    own = validate_spec(json.loads(json.dumps(raw)), "m")
    assert (own.keep_none, own.keep_full) == (0.65, 0.75)


def test_overlap_just_under_half_the_tile_is_accepted():
    assert validate_spec(spec_with(tile_size=64, overlap=31, size_multiple=1), "m").overlap == 31


@pytest.mark.parametrize("raw, fragment", [
    ([1, 2], "is not a JSON object"),
    (spec_without("tile_size"), "lacks 'tile_size'"),
    (spec_without("config"), "lacks 'config'"),
    (spec_with(format=2), "update SAR Cloud Removal"),
    (spec_with(format=0), "has format 0"),
    (spec_with(name=""), "non-empty text 'name'"),
    (spec_with(s2_bands=list(S2_BANDS[:12])), "13 Sentinel-2 L1C bands"),
    (spec_with(s2_bands=list(reversed(S2_BANDS))), "13 Sentinel-2 L1C bands"),
    (spec_with(s2_bands="B1-B12"), "13 Sentinel-2 L1C bands"),
    (spec_with(s1_bands=["VV"]), "VV, VH"),
    (spec_with(s1_bands=["HH", "HV"]), "VV, VH"),
    (spec_with(s2_scale=0), "positive 's2_scale'"),
    (spec_with(s1_db_range=[0, -25]), "low < high"),
    (spec_with(tile_size=100), "not a multiple of its size_multiple 8"),
    (spec_with(tile_size=64.0), "positive whole 'tile_size'"),
    (spec_with(overlap=True), "whole 'overlap'"),
    (spec_with(overlap=-1), "'overlap' >= 0"),
    (spec_with(overlap=32), "less than half its tile_size 64"),
    (spec_with(inputs={"s2": "s2"}), "map 'inputs' s2 and s1"),
    (spec_with(outputs={"restored": "restored", "gate": 3}), "map 'outputs' restored and gate"),
    (spec_with(config=[]), "'config' as a JSON object"),
    (spec_with(keep_clear={"none": 0.9, "full": 0.8}), "with 0 < a < b <= 1"),
    (spec_with(keep_clear={"full": 0.8}), "'keep_clear' as"),
    (spec_with(keep_clear=[0.6, 0.7]), "'keep_clear' as"),
])
def test_invalid_specs_are_refused_in_one_sentence_naming_the_file(raw, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)) as caught:
        validate_spec(raw, "/models/bad.onnx")
    assert "/models/bad.onnx" in str(caught.value)
    assert_one_sentence(str(caught.value))


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """A registry of model names in a temporary folder instead of the shipped weights."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(model_spec, "WEIGHTS_DIR", folder)
    return folder


def test_registered_names_resolve_to_their_onnx_and_torch_files(weights_dir):
    tiny_models.identity_onnx(weights_dir / "tiny.onnx")
    tiny_models.identity_torch(weights_dir / "tiny.pt")
    tiny_models.identity_onnx(weights_dir / "onnx_only.onnx")
    (weights_dir / "README.md").write_text("not a model")
    assert list_models() == ["onnx_only", "tiny"]
    files = resolve_model("tiny")
    assert (files.name, files.onnx_path, files.torch_path) == (
        "tiny", weights_dir / "tiny.onnx", weights_dir / "tiny.pt")
    assert files.paths == [weights_dir / "tiny.onnx", weights_dir / "tiny.pt"]
    only = resolve_model("onnx_only")
    assert (only.onnx_path, only.torch_path) == (weights_dir / "onnx_only.onnx", None)
    assert only.paths == [weights_dir / "onnx_only.onnx"]


def test_default_is_an_alias_of_the_default_model(weights_dir):
    tiny_models.identity_torch(weights_dir / f"{DEFAULT_MODEL}.pt")
    files = resolve_model("default")
    assert files.name == DEFAULT_MODEL
    assert (files.onnx_path, files.torch_path) == (None, weights_dir / f"{DEFAULT_MODEL}.pt")


def test_a_path_picks_up_its_sibling_with_the_other_suffix(tmp_path, weights_dir):
    tiny_models.identity_onnx(tmp_path / "mine.onnx")
    tiny_models.identity_torch(tmp_path / "mine.pt")
    tiny_models.identity_onnx(tmp_path / "alone.onnx")
    for given in (tmp_path / "mine.pt", str(tmp_path / "mine.onnx")):
        files = resolve_model(given)
        assert (files.onnx_path, files.torch_path) == (tmp_path / "mine.onnx",
                                                       tmp_path / "mine.pt")
    assert resolve_model(tmp_path / "alone.onnx").torch_path is None


def test_an_unknown_name_lists_the_registered_models(weights_dir):
    tiny_models.identity_onnx(weights_dir / "alpha.onnx")
    tiny_models.identity_onnx(weights_dir / "beta.onnx")
    with pytest.raises(UserError, match=r"Unknown model 'gamma'.*\(alpha, beta\)") as caught:
        resolve_model("gamma")
    assert_one_sentence(str(caught.value))


def test_an_unknown_name_with_no_models_installed_says_where_they_belong(weights_dir):
    with pytest.raises(UserError, match=re.escape(f"none are installed in {weights_dir}")):
        resolve_model("default")


def test_missing_or_non_model_files_are_refused(tmp_path, weights_dir):
    with pytest.raises(UserError, match="does not exist") as caught:
        resolve_model(tmp_path / "gone.onnx")
    assert_one_sentence(str(caught.value))
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(UserError, match="is not a model file"):
        resolve_model(tmp_path / "weights.bin")


def test_specs_are_read_from_onnx_and_torch_files(tmp_path):
    onnx_spec = load_spec(resolve_model(tiny_models.identity_onnx(tmp_path / "a.onnx",
                                                                  tile_size=48, overlap=8)))
    torch_spec = load_spec(resolve_model(tiny_models.identity_torch(tmp_path / "b.pt",
                                                                    tile_size=48, overlap=8)))
    assert onnx_spec == torch_spec
    assert (onnx_spec.architecture, onnx_spec.tile_size, onnx_spec.overlap) == ("identity", 48, 8)


def test_onnx_and_torch_files_of_one_model_must_agree(tmp_path):
    tiny_models.identity_onnx(tmp_path / "m.onnx", tile_size=64)
    tiny_models.identity_torch(tmp_path / "m.pt", tile_size=64)
    files = resolve_model(tmp_path / "m.onnx")
    spec = load_spec(files)
    assert spec.tile_size == 64
    create_backend(files, spec, backend="torch").close()
    tiny_models.identity_torch(tmp_path / "m.pt", tile_size=96)
    spec = load_spec(resolve_model(tmp_path / "m.onnx"))   # the ONNX spec plans the run
    assert spec.tile_size == 64
    with pytest.raises(UserError, match="different model spec") as caught:
        create_backend(files, spec, backend="torch")
    assert_one_sentence(str(caught.value))



def test_corrupt_onnx_files_are_refused(tmp_path):
    good = tiny_models.identity_onnx(tmp_path / "good.onnx")
    tiny_models.truncated_copy(good, tmp_path / "cut.onnx")
    (tmp_path / "text.onnx").write_text("this is not a model, it is a note\n" * 5)
    # "truncated" in either refusal: a cut between two fields leaves a well-formed file that
    # only lacks the spec, which is stored last
    for name, fragment in (("cut.onnx", "truncated"), ("text.onnx", "not a readable ONNX model")):
        with pytest.raises(UserError, match=fragment) as caught:
            load_spec(resolve_model(tmp_path / name))
        assert_one_sentence(str(caught.value))


def test_onnx_metadata_is_read_as_onnx_itself_reads_it(tmp_path):
    models = [tiny_models.identity_onnx(tmp_path / "identity.onnx"),
              tiny_models.onnx_with_spec(tmp_path / "plain.onnx", None)]
    shipped = model_spec.WEIGHTS_DIR / f"{DEFAULT_MODEL}.onnx"
    models += [shipped] if shipped.is_file() else []
    extra = onnx.load(models[0])
    helper.set_model_props(extra, {"é": "ü" * 300, SPEC_KEY: "{}", "empty": ""})
    onnx.save(extra, tmp_path / "extra.onnx")
    for path in models + [tmp_path / "extra.onnx"]:
        expected = {p.key: p.value for p in onnx.load(path, load_external_data=False)
                    .metadata_props}
        assert read_metadata(path) == expected


def test_every_truncation_of_an_onnx_file_is_refused(tmp_path):
    data = tiny_models.identity_onnx(tmp_path / "whole.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    # Every 5th length, and every one near the end, where the spec is stored.
    for length in sorted({*range(0, len(data), 5), *range(len(data) - 40, len(data))}):
        cut.write_bytes(data[:length])
        with pytest.raises(UserError, match="truncated"):
            load_spec(resolve_model(cut))


def test_onnx_files_without_a_valid_spec_are_refused(tmp_path):
    with pytest.raises(UserError, match="carries no SAR Cloud Removal spec"):
        load_spec(resolve_model(tiny_models.onnx_with_spec(tmp_path / "plain.onnx", None)))
    bad = tiny_models.onnx_with_spec(tmp_path / "bad.onnx", spec_with(tile_size=100))
    with pytest.raises(UserError, match=re.escape(f"spec in {bad} has tile_size 100")):
        load_spec(resolve_model(bad))


def test_corrupt_or_foreign_torch_files_are_refused(tmp_path):
    good = tiny_models.identity_torch(tmp_path / "good.pt")
    tiny_models.truncated_copy(good, tmp_path / "cut.pt")
    with pytest.raises(UserError, match="not a readable torch checkpoint") as caught:
        load_spec(resolve_model(tmp_path / "cut.pt"))
    assert_one_sentence(str(caught.value))
    torch.save({"state_dict": {}}, tmp_path / "no_spec.pt")
    with pytest.raises(UserError, match="not a SAR Cloud Removal checkpoint"):
        load_spec(resolve_model(tmp_path / "no_spec.pt"))


def test_torch_files_that_would_run_code_when_loaded_are_refused(tmp_path):
    # A pickled object (here a whole module) is what a malicious checkpoint uses to run code.
    torch.save({"spec": tiny_models.tiny_spec(), "state_dict": {}, "net": torch.nn.Identity()},
               tmp_path / "pickled.pt")
    with pytest.raises(UserError, match="refused for safety") as caught:
        load_spec(resolve_model(tmp_path / "pickled.pt"))
    assert_one_sentence(str(caught.value))


def test_reading_an_onnx_spec_imports_no_runtime(tmp_path):
    """The plugin zip ships onnxruntime only, and nothing heavy may load before a run starts,
    not even when a .pt sibling is there to be checked (the torch backend does that)."""
    path = tiny_models.identity_onnx(tmp_path / "m.onnx")
    tiny_models.identity_torch(tmp_path / "m.pt")
    code = ("import sys; import sar_cloud_removal.core.backends; "
            "from sar_cloud_removal.core.model_spec import load_spec, resolve_model; "
            "print(load_spec(resolve_model(sys.argv[1])).tile_size, "
            "sorted({'torch', 'onnx', 'onnxruntime'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "64 []"


def test_models_command_lists_each_model_with_its_cards_headline(weights_dir, capsys):
    from argparse import Namespace

    from sar_cloud_removal.cli import models

    tiny_models.identity_onnx(weights_dir / "tiny.onnx")
    tiny_models.identity_torch(weights_dir / "tiny.pt")
    (weights_dir / "tiny.md").write_text("# Card\n\nHeadline: PSNR 30.1 dB on nothing real\n")
    tiny_models.identity_onnx(weights_dir / "bare.onnx")
    assert models.run(Namespace(names=False)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["bare  0.0.1  identity  [onnx]", "    no model card",
                   "tiny  0.0.1  identity  [onnx+pt]", "    PSNR 30.1 dB on nothing real"]
    assert models.run(Namespace(names=True)) == 0
    assert capsys.readouterr().out.split() == ["bare", "tiny"]


def test_every_shipped_model_card_has_a_headline(cli):
    result = cli("models")
    assert result.returncode == 0, result.stderr
    assert f"{DEFAULT_MODEL} (default)" in result.stdout
    assert "no headline" not in result.stdout and "no model card" not in result.stdout
