#!/usr/bin/env bash
# One device call for dla.impls.triton_gpu: install, test, certify on CUDA, benchmark.
# Usage (on the GPU machine, repository root): scripts/gpu_run.sh OUT_DIR [CERT_SECONDS] [BENCH_ARGS...]
# Needs .gpu/fla_core-0.6.0-py3-none-any.whl (carried; the machine has no registry).
# Environment: RUN_PYTEST=0 skips tests/triton (PYTEST_S its time limit, default 240;
# PYTEST_ARGS replaces the test selection);
# STOP_ON_FAIL=0 goes on after failing tests; CERT_LEVELS="gradients ..." certifies those
# levels only (default: the complete run, every claimed level plus the always-run ones);
# RUN_BENCH=0 skips the benchmark. Files under OUT_DIR: setup.log, pytest.log, cert.json,
# cert.log, bench.log, triton_gpu.md, triton_gpu.json.
set -u
OUT=${1:?output folder}; shift
CERT_S=${1:-240}; shift || true
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{
  nvidia-smi -L
  python3 -c 'import torch, triton, setuptools; print(torch.__version__, triton.__version__, setuptools.__version__, torch.cuda.get_device_name())'
  python3 -m pip install -q --no-deps --no-build-isolation -e . && echo "install ok"
  python3 -m pip install -q --no-deps .gpu/fla_core-0.6.0-py3-none-any.whl && echo "fla ok"
  python3 -c 'import einops, fla; print("einops", einops.__version__)'
} 2>&1 | tee "$OUT/setup.log"
if [ "${RUN_PYTEST:-1}" = 1 ]; then  # a kernel that fails its tests stops the call here
  eval "PYARGS=(${PYTEST_ARGS:-tests/triton})"  # shell words, so a -k expression may be quoted
  timeout "${PYTEST_S:-240}" python3 -m pytest -q -p no:cacheprovider "${PYARGS[@]}" 2>&1 \
    | tee "$OUT/pytest.log" | tail -15
  if [ "${PIPESTATUS[0]}" != 0 ] && [ "${STOP_ON_FAIL:-1}" = 1 ]; then
    echo "tests/triton failed: no certification, no benchmark"; exit 1
  fi
fi
if [ "$CERT_S" -gt 0 ]; then
  LEVELS=()
  [ -n "${CERT_LEVELS:-}" ] && LEVELS=(--levels $CERT_LEVELS)
  timeout "$CERT_S" python3 -m dla.conformance run --impl triton_gpu \
    "${LEVELS[@]}" --report "$OUT/cert.json" --only-failures --no-progress 2>&1 \
    | tee "$OUT/cert.log" | tail -40
  echo "cert exit: ${PIPESTATUS[0]}"
fi
[ "${RUN_BENCH:-1}" = 1 ] || exit 0
python3 benchmarks/bench_triton_gpu.py --out "$OUT/triton_gpu.md" --json "$OUT/triton_gpu.json" \
  "$@" 2>&1 | tee "$OUT/bench.log"
