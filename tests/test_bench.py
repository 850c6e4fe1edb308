"""`sar-cloud-removal bench` at a tiny size: one row per backend, with measured, positive numbers."""
import re
import subprocess
import sys

import pytest
import rasterio

import tiny_models
from sar_cloud_removal.cli.bench import (cached_scene, format_table, gemm_peak_gflops,
                                         limits_line, memory_line, parse_backends, parse_sizes)
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
        (size, _, device, seconds, mp_s, model_mp_s, _, rss, ratio, tile, redundancy,
         cog) = (c.strip() for c in row.split("|")[1:-1])
        assert abs(float(size) - 0.05) < 0.01 and device == "cpu"
        assert min(float(seconds), float(mp_s), float(model_mp_s), float(rss)) > 0
        assert float(ratio) == pytest.approx(float(mp_s) / float(model_mp_s), abs=0.02)
        assert 0 < int(tile) <= 64 and float(redundancy) >= 1 and float(cog) >= 0
    assert "machine:" in report and "command:" in report
    assert re.search(r"GEMM peak of this machine: \d+ GFLOP/s", report)
    assert re.search(r"peak RSS as the scene grows", report) is None   # one size only
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
    assert parse_sizes("4,full") == [4.0, 10980 ** 2 / 1e6]
    assert parse_backends("torch") == ["torch"]
    with pytest.raises(UserError, match="Unknown backend 'tensorrt'"):
        parse_backends("onnxruntime,tensorrt")


def test_the_table_states_ratio_memory_growth_and_the_distance_to_the_gemm_peak():
    row = dict(megapixels=4.0, backend="onnxruntime", device="cpu", seconds=5.0, mp_per_s=0.8,
               model_mp_per_s=1.0, overhead_percent=25.0, peak_rss_mb=500.0, tile=464,
               tile_pixels_per_pixel=1.35, commit_seconds=0.7)
    big = dict(row, megapixels=120.56, peak_rss_mb=525.0)
    table = format_table([row, big])
    assert "| 4.00 | onnxruntime | cpu | 5.0 | 0.800 | 1.000 | 25 | 500 | 0.80 | 464 | 1.35 " \
           "| 0.7 |" in table
    assert "500 MB at 4 MP -> 525 MB at 121 MP (+5 %)" in memory_line([row, big])
    line = limits_line(200.0, 100e3, [row])
    assert "200 GFLOP/s" in line and "100 kFLOP per pixel" in line and "2.00 MP/s" in line
    assert "100 GFLOP/s (50 % of the peak)" in line
    assert gemm_peak_gflops(0.05) > 0


def test_a_child_reports_its_own_peak_memory_not_its_parents():
    """Linux carries ru_maxrss over fork and exec: a child of a parent holding 600 MB read
    600 MB whatever it did itself, so every bench row showed the scene generator's peak."""
    ballast = b"\1" * (600 << 20)        # written, so every page is resident
    child = subprocess.run(
        [sys.executable, "-c", "from sar_cloud_removal.cli.bench import _peak_rss_mb; "
                               "print(_peak_rss_mb())"],
        capture_output=True, text=True, check=True)
    assert len(ballast) and 10 < float(child.stdout) < 400
