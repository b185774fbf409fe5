#!/usr/bin/env bash
# Everything jaxbce checks on a lent GPU machine, in one call, each step under its own time
# limit so that one slow or failing step still leaves the others' results:
#   1. the GPU tests (tests/test_gpu.py: the quick self-check verdict, memory),
#   2. python -m jaxbce.check --exhaustive (every float32 bit pattern),
#   3. the benchmark at the sizes that fill the card, and the fused linear loss,
#   4. the CPU-independent unit tests of the kernel and the losses, on the GPU.
# Run from the repository root with OUT set to a folder for the results (the device tool sets
# it); the logs and result files land there, nothing in the repository is written.
set -u
: "${OUT:?set OUT to a results folder}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PY:-python3}
step() {  # step NAME SECONDS COMMAND...: run, log to $OUT/NAME.log, report the status
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - t0)) s (limit $limit s)"
}
nvidia-smi -L
$PY -c "import jax, optax, flax, torch; print('jax', jax.__version__, jax.devices(), \
'optax', optax.__version__, 'flax', flax.__version__, 'torch', torch.__version__)"
step gpu-tests "${T_TESTS:-120}" $PY -m pytest -m gpu tests/test_gpu.py -v -s -p no:cacheprovider
step check-exhaustive "${T_CHECK:-240}" $PY -m jaxbce.check --exhaustive \
  --out "$OUT/check-exhaustive-gpu.txt"
mkdir -p "$OUT/bench"
step benchmark "${T_BENCH:-150}" $PY benchmarks/run.py --sizes 2^16 2^20 2^24 2^26 \
  --budget 5 --linear --linear-sizes 2^14 2^17 --out "$OUT/bench"
step unit-tests "${T_UNIT:-60}" $PY -m pytest -q -x -p no:cacheprovider -m "not gpu" \
  tests/test_kernels.py tests/test_losses.py
for f in "$OUT"/*.log; do echo "---- $f"; tail -n 25 "$f"; done
