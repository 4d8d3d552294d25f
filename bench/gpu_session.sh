#!/usr/bin/env bash
# Everything that needs a GPU, in one call of about 9.5 minutes, every result under $OUT:
#   the install, the CUDA compile check, the GPU tests (kernels against the reference, 50 training
#   steps against NumPy, exact resume, the 1-rank NCCL run), bench/gpu_attention.py (flash against
#   cuBLAS + softmax), bench/gpu_graph_probe.py (can a step be captured as a CUDA graph, and what
#   would replay gain), bench/gpu.py, and a short shakespeare training run.
#
# From a session that has a device machine (its image holds CuPy, PyTorch, mpi4py, NVRTC):
#   1. here:   mkdir -p .gpu-data && cp ../shared/data/tinyshakespeare.txt .gpu-data/
#              x=$(git rev-parse --git-path info/exclude); grep -qx /.gpu-data/ "$x" || echo /.gpu-data/ >>"$x"
#   2. device: run(command="bash bench/gpu_session.sh", carry=[".gpu-data"], timeout_s=600)
# Knobs (environment): PHASES (default "tests attention graphs bench train"), TRAIN_ITERS (default 500;
# 5000 is the issue's full run: PHASES=train TRAIN_ITERS=5000, a call of its own), BENCH_CONFIGS
# (default shakespeare,cpu,gpt2), BENCH_SIDES (default: all but torch-compile), BENCH_STEPS
# (default 10), DATA. Files back (at most 8): session.log, pytest-gpu.log, attention.json/.md,
# results.json/.md, train.log.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$(mktemp -d)}
DATA=${DATA:-.gpu-data/tinyshakespeare.txt}
[ -f "$DATA" ] || [ ! -f shared/data/tinyshakespeare.txt ] || DATA=shared/data/tinyshakespeare.txt
TRAIN_ITERS=${TRAIN_ITERS:-500}
BENCH_CONFIGS=${BENCH_CONFIGS:-shakespeare,cpu,gpt2}
BENCH_STEPS=${BENCH_STEPS:-10}
BENCH_SIDES=${BENCH_SIDES:-tinylm-fp32,tinylm-tf32,tinylm-reference,torch-fp32,torch-tf32,torch-bf16}
PHASES=${PHASES:-tests attention graphs bench train}
export PYTHONUNBUFFERED=1 TINYLM_HYPOTHESIS_PROFILE=ci
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # OpenMPI's mpiexec refuses root otherwise
LOG="$OUT/session.log"
start=$SECONDS

exec 3>&1                                    # the call's own output: progress lines only
say() { echo "== [$((SECONDS - start)) s] $*" | tee -a "$LOG" >&3; }
# phase SECONDS NAME COMMAND...: run with a time limit, log its exit status; never stop the script
phase() {
    local limit=$1 name=$2
    shift 2
    say "$name (limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    say "$name: exit $rc$([ $rc = 124 ] && echo ' (time limit)')"
}

say "install"
python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 || say "install failed"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import cupy, torch; print('cupy', cupy.__version__, '| torch', torch.__version__)"
    python3 -m tinylm.cli backends
    python3 -m tinylm.backends.cuda.nvrtc
} >>"$LOG" 2>&1

wants() { [[ " $PHASES " == *" $1 "* ]]; }

# the kernels against the reference, the training run against NumPy, exact resume, the 1-rank NCCL run
wants tests && phase 210 "GPU tests" bash -c "python3 -m pytest -q -p no:cacheprovider -m gpu tests/ \
    ; python3 -m pytest -q -p no:cacheprovider tests/test_backends.py -k cupy \
    ; python3 -m pytest -q -p no:cacheprovider tests/test_cuda_sources.py tests/test_cuda_host.py" \
    >"$OUT/pytest-gpu.log" 2>&1 && grep -E "passed|failed|skipped|error" "$OUT/pytest-gpu.log" | tail -6 >>"$LOG"

wants attention && phase 45 "bench/gpu_attention.py" python3 bench/gpu_attention.py --out "$OUT" >>"$LOG" 2>&1

wants graphs && phase 40 "bench/gpu_graph_probe.py" python3 bench/gpu_graph_probe.py --config cpu >>"$LOG" 2>&1

wants bench && phase 160 "bench/gpu.py" python3 bench/gpu.py --out "$OUT" --configs "$BENCH_CONFIGS" \
    --sides "$BENCH_SIDES" --steps "$BENCH_STEPS" --warmup 3 --timeout 60 >>"$LOG" 2>&1

if wants train && [ -f "$DATA" ]; then
    phase $((TRAIN_ITERS > 500 ? 590 : 90)) "train shakespeare, $TRAIN_ITERS iterations" \
        python3 -m tinylm.cli train --preset shakespeare --backend cupy --data "$DATA" \
        --out "$(mktemp -d)/shakespeare" --overwrite --max-iters "$TRAIN_ITERS" --eval-interval 250 \
        --eval-iters 50 >"$OUT/train.log" 2>&1
    tail -4 "$OUT/train.log" >>"$LOG"
elif wants train; then
    say "no $DATA: training skipped (see the top of this script)"
fi
say "done in $((SECONDS - start)) s"
