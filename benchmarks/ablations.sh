#!/usr/bin/env bash
# STBP ablations (issue 9): surrogate h1-h4, TD gradient on/off, reset exp/linear,
# detach_reset, T in {4, 8, 15, 30}; 3 seeds each, as Hydra sweeps into MLflow, then
# `snnrun compare` tables (Markdown, CSV) and plots into docs/results/.
#
# Size (fits a 2-core CPU: ~15 s a run when the machine is quiet): the paper MNIST MLP
# 784-800-10 preset, 1 epoch over the first 20,000 training images, 2,000 held out for
# validation, the full 10,000-image test set, T=8 (except the T sweep).
#
#   bash benchmarks/ablations.sh [OUTPUT_ROOT]      (default: outputs/ablations)
set -euo pipefail
cd "$(dirname "$0")/.."
SNNRUN=${SNNRUN:-.venv/bin/snnrun}
OUT=${1:-outputs/ablations}
DOCS=docs/results
mkdir -p "$OUT" "$DOCS"
BASE=(experiment=paper_mnist_mlp trainer.epochs=1 dataset.train_limit=20000
      dataset.val_size=2000 stbp.time_steps=8 seed=0,1,2 trainer.progress=off
      "paths.output_root=$OUT")
URI="sqlite:///$(cd "$OUT" && pwd)/mlflow.db"

sweep() {  # name, then the swept override
  local name=$1; shift
  "$SNNRUN" train -m "${BASE[@]}" "$@"
  "$SNNRUN" compare --tracking-uri "$URI" --md "$DOCS/ablation_$name.md" \
    --csv "$DOCS/ablation_$name.csv" --plot "$DOCS/ablation_$name.png"
}

sweep surrogate stbp.surrogate=h1,h2,h3,h4
sweep td_grad stbp.td_grad=true,false
sweep reset_form stbp.reset_form=exp,linear
sweep detach_reset stbp.detach_reset=false,true
sweep time_steps stbp.time_steps=4,8,15,30
