"""`sar-cloud-removal bench` at a tiny size: one row per backend, with measured, positive numbers."""
import re

import pytest
import rasterio

import tiny_models
from sar_cloud_removal.cli.bench import cached_scene, parse_backends, parse_sizes
from sar_cloud_removal.core.errors import UserError


@pytest.mark.slow
def test_bench_writes_a_row_per_backend_with_positive_numbers(cli, tmp_path):
    model = tiny_models.identity_onnx(tmp_path / "identity.onnx")
    tiny_models.identity_torch(tmp_path / "identity.pt")
    workdir = tmp_path / "bench"
    proc = cli("bench", "--sizes", "0.05", "--model", model, "--workdir", workdir,
               "--model-seconds", "0.1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    report = (workdir / "bench.md").read_text()
    rows = [line for line in report.splitlines() if re.match(r"\| \d", line)]
    assert [row.split("|")[2].strip() for row in rows] == ["onnxruntime", "torch"]
    for row in rows:
        size, _, device, seconds, mp_s, model_mp_s, _, rss = (c.strip() for c in row.split("|")[1:-1])
        assert abs(float(size) - 0.05) < 0.01 and device == "cpu"
        assert min(float(seconds), float(mp_s), float(model_mp_s), float(rss)) > 0
    assert "machine:" in report and "command:" in report
    assert (workdir / "outputs" / "0.05MP_torch.tif").is_file()


def test_scenes_are_generated_once_and_then_reused(tmp_path):
    first = cached_scene(tmp_path, 0.01)
    written = first.s2_cloudy.stat().st_mtime_ns
    again = cached_scene(tmp_path, 0.01)
    assert again == first and again.s2_cloudy.stat().st_mtime_ns == written
    with rasterio.open(first.s2_cloudy) as src:
        assert src.width == src.height == 100


@pytest.mark.parametrize("text", ["", "a,b", "0", "1,,-2", "1000"])
def test_bad_sizes_are_refused_in_one_sentence(text):
    with pytest.raises(UserError, match="--sizes"):
        parse_sizes(text)


def test_sizes_and_backends_parse():
    assert parse_sizes("1, 16,0.5") == [1.0, 16.0, 0.5]
    assert parse_backends("torch") == ["torch"]
    with pytest.raises(UserError, match="Unknown backend 'tensorrt'"):
        parse_backends("onnxruntime,tensorrt")
