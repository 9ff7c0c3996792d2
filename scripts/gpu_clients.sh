#!/usr/bin/env bash
# One device call for the suite's own GPU work (not triton_gpu's speed: scripts/gpu_run.sh):
#  1. certify flash-linear-attention's chunk_log_linear_attn through examples/fla_chunk_log_linear.py
#     in bfloat16, float16 and float32 (float32 with TRITON_F32_DEFAULT=ieee; a TF32 run is
#     logged to show why);
#  2. run triton_gpu's certification once under compute-sanitizer memcheck;
#  3. time `pytest --dla-impl=torch_cpu` serially and with pytest-xdist on all cores.
# Usage (GPU machine, repository root): scripts/gpu_clients.sh OUT_DIR
# Needs .gpu/fla_core-0.6.0-py3-none-any.whl (carried; the machine has no registry).
set -u
OUT=${1:?output folder}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{
  nvidia-smi -L
  python3 -m pip install -q --no-deps --no-build-isolation -e . && echo "install ok"
  python3 -m pip install -q --no-deps .gpu/fla_core-0.6.0-py3-none-any.whl && echo "fla ok"
  python3 -c 'import torch, triton, fla; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())'
  which compute-sanitizer && compute-sanitizer --version | tail -1
} 2>&1 | tee "$OUT/setup.log"

echo "== 1. fla chunk_log_linear_attn"
TRITON_F32_DEFAULT=ieee timeout "${FLA_S:-300}" python3 -m dla.conformance run \
  --impl examples.fla_chunk_log_linear --device cuda --dtype bfloat16 float16 float32 \
  --report "$OUT/fla_chunk_log_linear_certification.json" --only-failures --no-progress \
  2>&1 | tee "$OUT/fla_chunk.log" | tail -60
echo "fla cert exit: ${PIPESTATUS[0]}"
timeout 120 python3 -m dla.conformance run --impl examples.fla_chunk_log_linear --device cuda \
  --dtype float32 --levels execute --only-failures --no-progress 2>&1 \
  | tee "$OUT/fla_chunk_tf32.log" | tail -12
echo "fla float32 with TF32 (no TRITON_F32_DEFAULT) exit: ${PIPESTATUS[0]}"

echo "== 2. compute-sanitizer memcheck on triton_gpu"
if command -v compute-sanitizer >/dev/null; then
  timeout "${SAN_S:-300}" compute-sanitizer --tool memcheck --print-limit 20 --error-exitcode 9 \
    python3 -m dla.conformance run --impl triton_gpu --device cuda --dtype float32 \
    --levels ${SAN_LEVELS:-execute robustness} --report "$OUT/triton_gpu_memcheck.json" \
    --only-failures --no-progress 2>&1 | tee "$OUT/memcheck.log" | tail -40
  echo "memcheck exit: ${PIPESTATUS[0]}"
else
  echo "compute-sanitizer not found"
fi

echo "== 3. pytest-xdist speed-up on $(nproc) cores"
REPO=$(pwd)
WORK=$(mktemp -d)  # an empty folder: pytest collects only the certification's items
for n in 0 "$(nproc)"; do
  start=$(date +%s.%N)
  if [ "$n" = 0 ]; then args=(); else args=(-n "$n"); fi
  (cd "$WORK" && timeout 300 python3 -m pytest -q -p no:cacheprovider --dla-impl=torch_cpu \
    "${args[@]}" >>"$OUT/xdist.log" 2>&1)
  echo "workers=$n exit=$? seconds=$(python3 -c "import time; print(round(time.time() - $start, 1))")" \
    | tee -a "$OUT/xdist.log"
done
cd "$REPO"
