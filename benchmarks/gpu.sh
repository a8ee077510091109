#!/usr/bin/env bash
# One lent GPU's work, as one command (issues 9 and 10): install, CUDA tests, the GPU
# benchmark against the peers, then the MNIST paper rows x 3 seeds in parallel on the
# one GPU for a fixed time budget. Results go to OUT (at most 8 files come back):
#   env.txt tests.txt bench/bench.md bench/bench.json reproduce.md reproduce.json
#   logs.tar.gz gpu.log
#
#   bash benchmarks/gpu_pack.sh                  here, once: wheels + MNIST into .gpu/
#   device run (carry .gpu):  bash benchmarks/gpu.sh "$OUT"
#   bash benchmarks/gpu.sh /tmp/gpu-dry --dry     here: the same steps, tiny, on the CPU
#
# REPRO_S (default 240): seconds the reproduction runs get; each is stopped by SIGINT
# at the budget (it checkpoints and exits cleanly) and reports the epochs it reached.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu.sh OUT [--dry]}
DRY=${2:-}
mkdir -p "$OUT/bench"
exec > >(tee "$OUT/gpu.log") 2>&1
START=$(date +%s)
stamp() { echo "[$(($(date +%s) - START)) s] $*"; }

if [ "$DRY" = "--dry" ]; then
  PY=${PY:-.venv/bin/python}; DEVICE=cpu; REPRO_S=${REPRO_S:-150}; SECONDS_PER=0.5
  ROWS="mnist-mlp"; SEEDS="0 1"; CONFIGS=mlp10
  EXTRA=(trainer.epochs=2 dataset.train_limit=2000 dataset.val_size=500
         dataset.test_limit=500 stbp.time_steps=4)
else
  PY=python3; DEVICE=cuda; REPRO_S=${REPRO_S:-240}; SECONDS_PER=2
  ROWS="mnist-mlp mnist-cnn mnist-cnn-code"; SEEDS="0 1 2"; CONFIGS=mlp10,cnn10
  EXTRA=()
  stamp "install the carried wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" SNNRUN_DATA="$PWD/.gpu/data"
export PYTHONUNBUFFERED=1

stamp "environment"
{
  $PY -c "import sys, torch; print(sys.version); print('torch', torch.__version__,
  'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
  $PY -c "import triton; print('triton', triton.__version__)" 2>&1
  nvidia-smi 2>&1 | head -15
  git log --oneline -1 2>/dev/null
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

stamp "CUDA tests (-m gpu) and the Triton kernels"
# only the folders with CUDA tests: others import MLflow/tonic, absent there
$PY -m pytest -q -p no:cacheprovider -m gpu tests/snn tests/models > "$OUT/tests.txt" 2>&1
echo "pytest -m gpu exit $?" >> "$OUT/tests.txt"
tail -3 "$OUT/tests.txt"

stamp "benchmark on $DEVICE"
# what the GPU targets compare (issue 10): snnrun's CUDA backends against
# SpikingJelly (its Triton LIF where installed: the table names the kernel it ran)
# and plain torch, eager and compiled (the dry run on the CPU leaves out snnrun-triton)
IMPLS=snnrun-reference,snnrun-fused,snnrun-triton,snnrun-compiled,spikingjelly,torch,torch-compiled
$PY -m snnrun bench --device "$DEVICE" --configs "$CONFIGS" --impls "$IMPLS" --rounds 1 \
  --seconds "$SECONDS_PER" --threads 4 --out "$OUT/bench" > /dev/null 2>&1
echo "bench exit $?"; sed -n '1,200p' "$OUT/bench/bench.md" 2>/dev/null | grep -E "^\||^##"

stamp "reproduction rows ($ROWS) x seeds ($SEEDS), $REPRO_S s budget, in parallel"
RUNS=/tmp/snnrun-gpu-runs; rm -rf "$RUNS"; mkdir -p "$RUNS"
PIDS=()
for row in $ROWS; do
  experiment=$($PY -c "import sys; from snnrun.app.rows import load_row
print(load_row(sys.argv[1], quick=False).experiment)" "$row")
  for seed in $SEEDS; do
    dir="$RUNS/$row-s$seed"; mkdir -p "$dir"
    (
      t0=$(date +%s)
      timeout -s INT -k 30 "$REPRO_S" $PY -m snnrun train "experiment=$experiment" \
        "seed=$seed" "device=$DEVICE" logger=none trainer.progress=plain \
        trainer.num_threads=1 "paths.output_root=$dir" "${EXTRA[@]}" \
        > "$dir/train.out" 2>&1
      echo "exit $?" >> "$dir/train.out"
      echo $(($(date +%s) - t0)) > "$dir/wall_s"
    ) &
    PIDS+=($!)
  done
done
wait "${PIDS[@]}"  # not a bare `wait`: it would also wait for the log's tee
$PY benchmarks/gpu_summary.py "$RUNS" "$OUT/reproduce"
tar -czf "$OUT/logs.tar.gz" -C "$RUNS" --exclude='*.pt' . 2>/dev/null
stamp "done"
