#!/usr/bin/env bash
# The engine's GPU check: one run on a machine with an NVIDIA GPU, under 8 minutes, one table.
#
#   bash scripts/gpu_check.sh [OUT_DIR]          (default gpu_check_output/)
#
# 1. installs what CUDA needs when it is missing: onnxruntime-gpu (replacing the CPU build) and a
#    CUDA build of torch, plus rasterio/onnx/pytest when the Python in use lacks them;
# 2. runs the tests marked `gpu` (tests/test_gpu.py: both backends end to end on real pairs,
#    against their CPU run; tests/test_backends.py: device choice, agreement, out-of-memory);
# 3. restores a real pair on CUDA with each backend and says which device ran;
# 4. benchmarks 16 MP and a full Sentinel-2 tile (10980 x 10980 px) on CUDA, both backends
#    (target: a full tile in under 60 s on an H100-class GPU);
# 5. trains for 2 minutes on the GPU and reports training throughput;
# then prints one table (also written to OUT_DIR/gpu_check.md).
#
# Environment: PY (the Python to use; default .venv/bin/python, else python3), WHEELS (a folder
# of wheels for an offline install), TORCH_INDEX_URL (default the CUDA 12.8 wheels of
# pytorch.org), SAR_CR_SHARED_DATA (the real data; default ../shared/data), SKIP_INSTALL=1;
# BENCH_SIZES (default 16,full) and TRAIN_MINUTES (default 2) shrink a dry run.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=$(mkdir -p "${1:-gpu_check_output}" && cd "${1:-gpu_check_output}" && pwd)
export SAR_CR_SHARED_DATA=${SAR_CR_SHARED_DATA:-$REPO/../shared/data}
export PYTHONUNBUFFERED=1 GDAL_PAM_ENABLED=NO
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.32.0}       # the CPU build's pin (requirements.txt)
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}
BENCH_SIZES=${BENCH_SIZES:-16,full}
TRAIN_MINUTES=${TRAIN_MINUTES:-2}
START=$(date +%s)
ROWS=()

if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
row() { ROWS+=("| $1 | $2 | $3 | $4 |"); }
elapsed() { echo $(( $(date +%s) - $1 )); }

if ! GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        2>/dev/null | head -1) || [ -z "$GPU" ]; then
    echo "gpu_check: no NVIDIA GPU answers nvidia-smi here; run this on a machine with one." >&2
    exit 2
fi

# The repository root is the package sar_cloud_removal; make it importable without installing.
if ! "$PY" -c "import sar_cloud_removal" 2>/dev/null; then
    mkdir -p "$OUT/pkg" && ln -sfn "$REPO" "$OUT/pkg/sar_cloud_removal"
    export PYTHONPATH="$OUT/pkg${PYTHONPATH:+:$PYTHONPATH}"
fi

# ---- 1. install ----
t=$(date +%s)
pip_install() {
    if [ -n "${WHEELS:-}" ]; then
        "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$@"
    else
        "$PY" -m pip install -q "$@"
    fi
}
installed=""
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    for spec in "rasterio:rasterio" "onnx:onnx" "pytest:pytest"; do
        "$PY" -c "import ${spec%%:*}" 2>/dev/null || { pip_install "${spec#*:}" && installed+=" ${spec#*:}"; }
    done
    if ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; then
        "$PY" -m pip uninstall -q -y onnxruntime 2>/dev/null
        pip_install "onnxruntime-gpu==$ORT_GPU_VERSION" && installed+=" onnxruntime-gpu"
    fi
    if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
        if [ -n "${WHEELS:-}" ]; then pip_install "torch==$TORCH_VERSION"
        else "$PY" -m pip install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"; fi \
            && installed+=" torch(cuda)"
    fi
fi
VERSIONS=$("$PY" -c "
import onnxruntime as o, torch
print(f'onnxruntime {o.__version__} ({\"CUDA\" if \"CUDAExecutionProvider\" in o.get_available_providers() else \"no CUDA\"}), torch {torch.__version__} ({\"CUDA \" + torch.version.cuda if torch.cuda.is_available() else \"no CUDA\"})')" 2>&1 | tail -1)
row "install" "$([ -n "$installed" ] && echo "installed:$installed" || echo "nothing to install")" "$(elapsed $t)" "$VERSIONS"

# Scenes for the benchmark are generated meanwhile (CPU only; cached in OUT/bench/scenes).
mkdir -p "$OUT/bench"
for size in ${BENCH_SIZES//,/ }; do
    "$PY" -c "
from pathlib import Path
from sar_cloud_removal.cli.bench import FULL_TILE_MP, cached_scene
cached_scene(Path('$OUT/bench'), FULL_TILE_MP if '$size' == 'full' else float('$size'))" \
        > "$OUT/scene_$size.log" 2>&1 &
done

# ---- 2. tests marked gpu ----
t=$(date +%s)
timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py tests/test_backends.py \
    > "$OUT/pytest_gpu.log" 2>&1
rc=$?
summary=$(grep -E "passed|failed|skipped|error" "$OUT/pytest_gpu.log" | tail -1)
row "tests marked gpu" "$([ $rc = 0 ] && echo ok || echo "FAILED (rc $rc)")" "$(elapsed $t)" "${summary:-no summary (see pytest_gpu.log)}"

# ---- 3. a real pair on CUDA with each backend ----
for backend in onnxruntime torch; do
    t=$(date +%s)
    result=$(timeout 120 "$PY" -c "
import os, time
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds
d = os.environ['SAR_CR_SHARED_DATA'] + '/sen1floods11_sample'
r = remove_clouds(RemovalRequest(d + '/S2/Spain_7370579_S2Hand.tif', d + '/S1/Spain_7370579_S1Hand.tif',
                                 '$OUT/pair_$backend.tif', backend='$backend', device='cuda', batch_size=16))
notes = [m for m in r.messages if 'GPU' in m or 'CUDA' in m]
print(f'device {r.device}, {r.width}x{r.height} px in {r.seconds:.1f} s' + (f'; {notes[0]}' if notes else ''))
" 2>"$OUT/pair_$backend.log" | tail -1)
    status=$([[ "$result" == "device cuda"* ]] && echo ok || echo FAILED)
    row "real pair, $backend on CUDA" "$status" "$(elapsed $t)" "${result:-$(tail -1 "$OUT/pair_$backend.log")}"
done

# ---- 4. benchmark: 16 MP and a full S2 tile on CUDA ----
wait   # the scenes
t=$(date +%s)
timeout 330 "$PY" -m sar_cloud_removal.cli bench --sizes "$BENCH_SIZES" --backends onnxruntime,torch \
    --device cuda --tile 512 --batch-size 16 --model-seconds 3 --workdir "$OUT/bench" \
    > "$OUT/bench.log" 2>&1
rc=$?
full=$(grep -E "^\| 120\.56 \| onnxruntime" "$OUT/bench/bench.md" 2>/dev/null | awk -F'|' '{print $5}' | tr -d ' ')
row "bench $BENCH_SIZES MP, CUDA" "$([ $rc = 0 ] && echo ok || echo "FAILED (rc $rc)")" "$(elapsed $t)" \
    "full S2 tile end to end (onnxruntime): ${full:-?} s (target < 60 s); table below"

# ---- 5. two minutes of training on the GPU ----
t=$(date +%s)
"$PY" -c "
import json
from sar_cloud_removal.training.train import load_config
c = load_config('configs/pretrain.json')
c.update(max_minutes=float('$TRAIN_MINUTES'), steps=10**6, val_every=10**6, log_every=5, batch=64,
         workers=4, threads=4, init=None)
json.dump(c, open('$OUT/train_config.json', 'w'), indent=1)" > "$OUT/train.log" 2>&1
timeout 240 "$PY" -m sar_cloud_removal.cli train --config "$OUT/train_config.json" \
    --out "$OUT/train" >> "$OUT/train.log" 2>&1
rc=$?
train=$("$PY" -c "
import json
rows = [json.loads(l) for l in open('$OUT/train/log.jsonl')]
train = [r for r in rows if r.get('kind') == 'train']
steps = [r['seconds_per_step'] for r in train[1:] or train]   # after the warm-up when we can
end = [r for r in rows if r.get('kind') == 'end'][-1]
if not steps:   # too few steps to log: the whole run, warm-up and the final validation included
    steps = [end['elapsed_s'] / max(1, end['step'])]
c = json.load(open('$OUT/train_config.json'))
s = sorted(steps)[len(steps) // 2]
print(f'{end[\"step\"]} steps, {s * 1000:.0f} ms/step, {c[\"batch\"] / s:.1f} crops/s, '
      f'{c[\"batch\"] * c[\"crop\"] ** 2 / s / 1e6:.2f} MP/s (batch {c[\"batch\"]}, crop {c[\"crop\"]})')
" 2>/dev/null)
row "training, $TRAIN_MINUTES min on CUDA" "$([ $rc = 0 ] && [ -n "$train" ] && echo ok || echo "FAILED (rc $rc)")" "$(elapsed $t)" "${train:-see train.log}"

# ---- the table ----
{
    echo "# GPU check"
    echo
    echo "- GPU: $GPU; $(nproc) CPU cores; $VERSIONS"
    echo "- command: bash scripts/gpu_check.sh, $(date -u '+%Y-%m-%d %H:%M') UTC, $(elapsed "$START") s in all"
    echo
    echo "| step | status | seconds | result |"
    echo "|---|---|---:|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    grep -E "^- (model|machine)" "$OUT/bench/bench.md" 2>/dev/null
    echo
    grep -E "^\|" "$OUT/bench/bench.md" 2>/dev/null
    echo
    grep -E "^- (float32|peak RSS|120)" "$OUT/bench/bench.md" 2>/dev/null
} | tee "$OUT/gpu_check.md"
grep -q "FAILED" "$OUT/gpu_check.md" && exit 1 || exit 0
