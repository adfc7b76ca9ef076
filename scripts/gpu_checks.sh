#!/usr/bin/env bash
# The one prepared command for an accelerator machine: every GPU measurement the open issues name.
#   issue 10: Bayes throughput at d = 80, 256, 1024 states; the default sweep on the GPU, warm and cold
#   issue 11: the `base` GPT-J's training step, tokens/s and MFU (target >= 40 % of the bf16 peak)
#   issue 4:  GPT-J-6B shapes with attention capture vs transformers (benchmarks/bench_llm_gptj_gpu.py)
# Checked on CPU by `bash scripts/gpu_checks.sh --smoke` (tiny sizes; tests/test_bench_gpu.py runs
# bench_gpu.py --smoke). From the device tool, about 6-8 minutes of device time:
#   run(command="bash scripts/gpu_checks.sh", carry=[".whl"], timeout_s=570)
# `.whl` holds flax / optax wheels at this project's pins (bash scripts/gpu_wheels.sh makes it); without
# it the image's own flax and optax are used. Every log and JSON goes to $OUT (or runs/gpu).
# Then, with the device time left: bash scripts/gpu_pretrain.sh (issue 11's targets with a GPU-sized run).
set -uo pipefail
SMOKE=""
[[ "${1:-}" == "--smoke" ]] && SMOKE="--smoke"
DEST=${OUT:-runs/gpu}
mkdir -p "$DEST"
source scripts/gpu_env.sh
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
  --format=csv | tee "$DEST/nvidia-smi.txt"
$PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" \
  2>&1 | tee "$DEST/versions.txt"
status=0
# 1 + 2: Bayes throughput (issue 10) and the base training step (issue 11)
timeout 200 $PY benchmarks/bench_gpu.py $SMOKE --skip-train --json "$DEST/bench_gpu_bayes.json" 2>&1 \
  | tee "$DEST/bench_gpu_bayes.log" || status=1
timeout 200 $PY benchmarks/bench_gpu.py $SMOKE --skip-bayes --json "$DEST/bench_gpu_train.json" 2>&1 \
  | tee "$DEST/bench_gpu_train.log" || status=1
if [[ -z "$SMOKE" ]]; then
  # 3: the default `make demo` sweep on the accelerator, its stages, cold and warm (issue 10)
  timeout 150 $PY benchmarks/profile_sweep.py 2>&1 | tee "$DEST/profile_sweep.log" || status=1
  # 4: GPT-J-6B shapes, our Flax forward with capture vs transformers eager (issue 4)
  timeout 240 $PY benchmarks/bench_llm_gptj_gpu.py 2>&1 | tee "$DEST/gptj.log" || status=1
fi
exit $status
