#!/usr/bin/env bash
# One device call for dla.impls.triton_gpu: install, certify on CUDA, benchmark.
# Usage (on the GPU machine, repository root): scripts/gpu_run.sh OUT_DIR [CERT_SECONDS] [BENCH_ARGS...]
# Needs .gpu/fla_core-0.6.0-py3-none-any.whl (carried; the machine has no registry).
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
  timeout 180 python3 -m pytest -q -p no:cacheprovider tests/triton 2>&1 | tee "$OUT/pytest.log" | tail -15
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "tests/triton failed: no certification, no benchmark"; exit 1; }
fi
if [ "$CERT_S" -gt 0 ]; then
  timeout "$CERT_S" python3 -m dla.conformance run --impl triton_gpu --device cuda \
    --levels plan execute end_to_end streaming varlen --report "$OUT/cert.json" \
    --only-failures --no-progress 2>&1 | tee "$OUT/cert.log" | tail -40
  echo "cert exit: ${PIPESTATUS[0]}"
  timeout 120 python3 -m dla.conformance run --impl triton_gpu --device cuda \
    --levels gradients --report "$OUT/cert_gradients.json" \
    --only-failures --no-progress 2>&1 | tee "$OUT/cert_gradients.log" | tail -10
  echo "gradients cert exit: ${PIPESTATUS[0]}"
fi
[ "${RUN_BENCH:-1}" = 1 ] || exit 0
python3 benchmarks/bench_triton_gpu.py --out "$OUT/triton_gpu.md" "$@" 2>&1 | tee "$OUT/bench.log"
