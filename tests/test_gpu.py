"""The engine on a GPU, end to end, with the shipped network on real pairs: both backends run on
CUDA (no silent fall-back to the CPU) and agree with their own CPU run. Marked `gpu`: skipped
without a GPU; scripts/gpu_check.sh runs them on one."""
import numpy as np
import onnxruntime
import pytest
import rasterio
import torch

from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds

HAS_CUDA = {"onnxruntime": "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
            "torch": torch.cuda.is_available()}
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(not HAS_CUDA[b],
                                                     reason=f"{b} has no CUDA here"))
            for b in ("onnxruntime", "torch")]
pytestmark = pytest.mark.gpu

PAIRS = {"sen12mscr": ("sen12mscr/s2_cloudy/ROIs2017_winter_112_p797.tif",
                       "sen12mscr/s1/ROIs2017_winter_112_p797.tif"),
         "sen1floods11": ("sen1floods11_sample/S2/Spain_7370579_S2Hand.tif",
                          "sen1floods11_sample/S1/Spain_7370579_S1Hand.tif")}


def _restore(tmp_path, shared_data, pair, backend, device, **request):
    s2, s1 = (shared_data / p for p in PAIRS[pair])
    out = tmp_path / f"{pair}_{backend}_{device}.tif"
    result = remove_clouds(RemovalRequest(str(s2), str(s1), str(out), backend=backend,
                                          device=device, raw_network=True, **request))
    with rasterio.open(result.out_path) as src:
        return result, src.read().astype(np.float64)


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_engine_runs_on_cuda_and_agrees_with_the_cpu(tmp_path, shared_data, pair, backend):
    if not (shared_data / PAIRS[pair][0]).is_file():
        pytest.skip(f"{PAIRS[pair][0]} is not in the shared data")
    on_gpu, restored_gpu = _restore(tmp_path, shared_data, pair, backend, "cuda", batch_size=16)
    assert on_gpu.device == "cuda", on_gpu.messages
    assert not [m for m in on_gpu.messages if "GPU" in m or "CUDA" in m], on_gpu.messages
    on_cpu, restored_cpu = _restore(tmp_path, shared_data, pair, backend, "cpu")
    difference = np.abs(restored_gpu - restored_cpu)
    # GPU convolutions may round through TF32: a few DN at most, nearly everywhere.
    assert difference.mean() < 5 and np.percentile(difference, 99) < 40, \
        (difference.mean(), np.percentile(difference, 99))
