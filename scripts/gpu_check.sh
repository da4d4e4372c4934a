#!/usr/bin/env bash
# The GPU checks of chapter 9 in one script, for a machine with one CUDA GPU (made for an H100 with
# PyTorch 2.11 + CUDA 13 and Triton 3.6). Run it from the repository root; embedlib need not be
# installed (PYTHONPATH=. is set here). No internet, no Jupyter needed. About 7 minutes.
#
#     OUT=/path/to/results bash scripts/gpu_check.sh
#
# Steps, each with its own time limit; a failing step is logged and the next one still runs:
#   1. environment: nvidia-smi, versions                          -> $OUT/environment.txt
#   2. kernel tests: tests/test_triton_kernels.py, compiled on the GPU and (in a child process)
#      through Triton's interpreter                                 -> $OUT/test_triton_kernels.{txt,xml}
#   3. the benchmark on the GPU, default sizes                      -> $OUT/bench_gpu.{json,txt}
#      (the JSON holds the GPU's name, torch/triton/CUDA versions and the date; it is saved after
#      every suite, so a run cut short still leaves its measurements)
#   4. the CUDA test suite: tests/test_cuda.py, tests/test_cuda_chapter12.py, and the deferred bounds check without host syncs
#      and in a CUDA graph (tests/test_bounds.py -k cuda)       -> $OUT/test_cuda.{txt,xml}
#   5. chapters 5 and 9 run without Jupyter, printed outputs compared with the stored ones, if time
#      is left (scripts/check_notebook_outputs.py; cells tagged output-depends-on-gpu, such as
#      chapter 9's live GPU results, run but are not compared)   -> $OUT/notebooks.txt
#   6. forward lookups with 16M indices per call, if time is left   -> $OUT/bench_gpu_large_forward.{json,txt}
#   7. kernel block sizes (the benchmark's "tune" suite), if time is left -> $OUT/tune_gpu.{json,txt}
# $OUT/summary.txt lists every step's exit status and time; $OUT/gpu_check.log has everything. The
# benchmark steps exit with 3 when they ran but a target was not met (1 means they failed to run).
# If the smoke lookup of step 1 fails, the script stops there.
#
# Budget: GPU_CHECK_BUDGET seconds in all (default 420); a step never starts with less than 20 s
# left, and never runs past the budget.
#
# Afterwards (on the machine without the GPU): mkdir -p book/data, copy $OUT/bench_gpu.json to book/data/gpu_benchmark.json
# and commit it; chapter 3 then shows its one-hot numbers (labelled with the GPU, the versions and the
# date) where no GPU is present, and chapter 9 plots its forward, backward and bag results. The
# targets table at the end of $OUT/bench_gpu.txt says which GPU targets held. Re-execute both chapters
# (scripts/execute_notebooks.py book/03_what_lookup_saves.ipynb book/09_fast_gpu_lookup.ipynb) so
# that their stored outputs show the file.
set -u

OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.txt"
: > "$LOG"
: > "$SUMMARY"

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET EMBEDLIB_TRITON  # the compiled kernels, unless a test asks otherwise
PY="${PYTHON:-$(command -v python3 || command -v python)}"
BUDGET="${GPU_CHECK_BUDGET:-420}"
START=$(date +%s)
# pytest: no nbval flags from pyproject.toml (nbval may be missing), no cache files in the tree
PYTEST=("$PY" -m pytest -o addopts= -p no:cacheprovider -q -rfEs --durations=10)

say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# step NAME LIMIT_SECONDS OUTPUT_FILE COMMAND...: run with a limit, tee into OUTPUT_FILE and the log.
step() {
    local name=$1 limit=$2 file=$3
    shift 3
    # a step is stopped at its limit with SIGINT, and killed 20 s later if it is still running:
    # keep that grace period inside the budget too
    local left=$(( BUDGET - ($(date +%s) - START) - 20 ))
    if (( left < 20 )); then
        say "SKIP $name: only ${left}s of the ${BUDGET}s budget left (after the 20 s grace period)"
        echo "$name skipped (budget)" >> "$SUMMARY"
        return 0
    fi
    (( limit > left )) && limit=$left
    say "START $name (limit ${limit}s): $*"
    local t0
    t0=$(date +%s)
    timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee "$file" >> "$LOG"
    local rc=${PIPESTATUS[0]}
    local took=$(( $(date +%s) - t0 ))
    local what="rc=$rc"
    (( rc == 124 || rc == 130 || rc == 137 )) && what="rc=$rc (time limit)"
    say "END $name: $what after ${took}s"
    echo "$name $what ${took}s" >> "$SUMMARY"
    return 0
}

# 1. Where we are: the GPU, the versions, and one lookup through the kernels.
read -r -d '' ENVIRONMENT_PY <<'EOF'
import platform
import numpy, torch
print("python", platform.python_version(), "numpy", numpy.__version__, "torch", torch.__version__,
      "cuda", torch.version.cuda)
print("cuda available:", torch.cuda.is_available())
try:
    import triton
    print("triton", triton.__version__)
except Exception as e:
    print("triton import failed:", repr(e))
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu:", torch.cuda.get_device_name(0), "capability", f"{p.major}.{p.minor}",
          "memory GiB", round(p.total_memory / 2**30, 1), "SMs", p.multi_processor_count)
    import embedlib.torch as el
    from embedlib.torch import _triton
    w = torch.randn(10, 4, device="cuda")
    print("kernels enabled on cuda:", _triton.enabled(w))
    out = el.lookup(torch.tensor([3, 1, 3], device="cuda"), w)
    print("smoke lookup equal:", bool(torch.equal(out, w[[3, 1, 3]])))
import shutil, sysconfig, os
include = sysconfig.get_paths()["include"]
print("C compiler for Triton's launchers:", shutil.which("gcc") or shutil.which("cc") or shutil.which("clang"),
      "| Python.h:", os.path.exists(os.path.join(include, "Python.h")))
EOF
step environment 90 "$OUT/environment.txt" bash -c 'nvidia-smi || echo "nvidia-smi failed"; "$0" -c "$1"' \
    "$PY" "$ENVIRONMENT_PY"
# Without a working kernel every later step would fail for the same reason: stop here instead of
# spending the GPU's time on it.
if ! grep -q "smoke lookup equal: True" "$OUT/environment.txt"; then
    say "STOP: the smoke lookup through embedlib's kernels did not work (see environment.txt); nothing else run"
    echo "stopped after environment: smoke lookup failed" >> "$SUMMARY"
    tee -a "$LOG" < "$SUMMARY"
    exit 0
fi

# 2. Kernel tests: compiled on the GPU here, interpreted on the CPU in a child process.
step kernel-tests 150 "$OUT/test_triton_kernels.txt" \
    "${PYTEST[@]}" tests/test_triton_kernels.py --junitxml="$OUT/test_triton_kernels.xml"

# 3. The benchmark on the GPU (the one-hot sweep may use up to 8 GiB for V = 1,000,000).
step benchmark 200 "$OUT/bench_gpu.txt" \
    "$PY" -m embedlib.bench --device cuda --sizes default --max-onehot-gib 8 --json "$OUT/bench_gpu.json"

# 4. The CUDA suite: every function and layer on the GPU equals the CPU.
step cuda-tests 120 "$OUT/test_cuda.txt" \
    "${PYTEST[@]}" tests/test_cuda.py tests/test_cuda_chapter12.py tests/test_bounds.py -k cuda --junitxml="$OUT/test_cuda.xml"

# 5. Chapters 5 and 9 on the GPU, without Jupyter: every code cell runs, and what it prints must match
#    the stored outputs (after nbval's masking); chapter 9 measures this GPU live (optional).
step notebooks 200 "$OUT/notebooks.txt" \
    "$PY" scripts/check_notebook_outputs.py book/05_pytorch_gpu.ipynb book/09_fast_gpu_lookup.ipynb

# 6. The forward lookups again with 16M indices per call, where fixed costs per call (the range
#    check's host sync, launches) weigh less (optional).
step benchmark-large-forward 90 "$OUT/bench_gpu_large_forward.txt" \
    "$PY" -m embedlib.bench --device cuda --sizes large --suites forward --json "$OUT/bench_gpu_large_forward.json"

# 7. Block sizes of the gather and scatter kernels, for tuning (optional).
step tune 70 "$OUT/tune_gpu.txt" \
    "$PY" -m embedlib.bench --device cuda --suites tune --json "$OUT/tune_gpu.json"

say "done in $(( $(date +%s) - START ))s; summary:"
tee -a "$LOG" < "$SUMMARY"
exit 0
