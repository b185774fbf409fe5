#!/usr/bin/env bash
# Everything jaxbce checks on a lent GPU machine, in one call, each step under its own time
# limit so that one slow or failing step still leaves the others' results:
#   1. the GPU tests (tests/test_gpu.py: the quick self-check verdict, memory),
#   2. python -m jaxbce.check --exhaustive (every float32 bit pattern),
#   3. XLA's temp bytes of value_and_grad over shapes and dtypes (tools/memory_probe.py),
#   4. the benchmark at its default sizes (2^12..2^26 on a GPU) with the fused linear loss,
#   5. the unit tests of the kernel and the losses, on the GPU (appended to gpu-tests.log).
# Run from the repository root with OUT set to a folder for the results (the device tool sets
# it); the logs and result files land there, nothing in the repository is written. At the end
# everything under OUT is also packed into OUT/device-results.tar.gz (the device tool brings
# back at most 8 files). COMMIT, if set, is printed first and recorded in the benchmark's
# JSON: the copy of the tree there carries stale git data (the session's first commit).
# Each step's limit is an environment variable (T_TESTS, T_CHECK, ...); BENCH_SIZES picks the
# benchmark's sizes (default: its own, 2^12..2^26 on a GPU). On an H200 on 2026-11-27 the
# steps took: GPU tests 56-60 s, exhaustive check 90-105 s, memory probe 14-15 s, benchmark
# at 3 to 5 sizes with --linear 92-137 s; the unit tests did not finish in 45-50 s.
set -u
: "${OUT:?set OUT to a results folder}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PY:-python3}
step() {  # step NAME SECONDS COMMAND...: run, append to $OUT/NAME.log, report the status
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - t0)) s (limit $limit s)"
}
echo "commit ${COMMIT:-unknown}"
# The results' "git" field (benchmarks/bench/machine.py): the copy here may carry stale git data.
[ -n "${COMMIT:-}" ] && export JAXBCE_COMMIT=$COMMIT
nvidia-smi -L
$PY -c "import jax, optax, flax, torch; print('jax', jax.__version__, jax.devices(), \
'optax', optax.__version__, 'flax', flax.__version__, 'torch', torch.__version__)"
step gpu-tests "${T_TESTS:-100}" $PY -m pytest -m gpu tests/test_gpu.py -v -s -p no:cacheprovider
step check-exhaustive "${T_CHECK:-150}" $PY -m jaxbce.check --exhaustive --no-progress \
  --out "$OUT/check-exhaustive-gpu.txt"
step memory-probe "${T_PROBE:-45}" $PY tools/memory_probe.py --hlo "$OUT/hlo.txt"
mkdir -p "$OUT/bench"
# shellcheck disable=SC2086  # BENCH_SIZES is a list of sizes
step benchmark "${T_BENCH:-200}" $PY benchmarks/run.py --budget 5 --linear \
  ${BENCH_SIZES:+--sizes $BENCH_SIZES} --out "$OUT/bench"
step gpu-tests "${T_UNIT:-60}" $PY -m pytest -q -x -p no:cacheprovider -m "not gpu" \
  tests/test_kernels.py tests/test_losses.py tests/test_errors.py tests/test_memory.py
for f in "$OUT"/*.log; do echo "---- $f"; tail -n 25 "$f"; done
tar czf /tmp/device-results.tar.gz -C "$OUT" . && mv /tmp/device-results.tar.gz "$OUT/"
ls -la "$OUT" "$OUT/bench"
