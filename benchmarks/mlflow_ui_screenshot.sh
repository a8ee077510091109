#!/usr/bin/env bash
# Look at MLflow's UI as a user meets it (issue 13): a short tracked run, `mlflow ui`
# on its store, and headless Chromium screenshots of the experiment and the run.
#   bash benchmarks/mlflow_ui_screenshot.sh [OUT_DIR]     (default: docs/images)
# Needs Debian's chromium (apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${1:-docs/images}" && cd "${1:-docs/images}" && pwd)
WORK=$(mktemp -d)
PORT=${PORT:-5077}
.venv/bin/snnrun train debug=fast logger=mlflow logger.plot_every=1 trainer.epochs=2 \
  trainer.progress=off "paths.output_root=$WORK" > "$WORK/train.log" 2>&1
STORE="sqlite:///$WORK/mlflow.db"
setsid .venv/bin/mlflow ui --backend-store-uri "$STORE" --host 127.0.0.1 --port "$PORT" \
  > "$WORK/ui.log" 2>&1 &
UI=$!
trap 'kill -- -$UI 2>/dev/null || true' EXIT
for _ in $(seq 180); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { echo "mlflow ui did not start:" >&2; tail "$WORK/ui.log" >&2; exit 1; }
IDS=$(.venv/bin/python - "$STORE" <<'PY'
import sys
from mlflow import MlflowClient
c = MlflowClient(sys.argv[1])
e = c.get_experiment_by_name("mnist")
r = c.search_runs([e.experiment_id])[0]
print(e.experiment_id, r.info.run_id)
PY
)
read -r EXP RUN <<< "$IDS"
shot() {  # url, file
  timeout 180 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d)" --window-size=1400,900 --virtual-time-budget=15000 \
    --screenshot="$2" "$1" > /dev/null 2>&1
  [ -s "$2" ] || { echo "no screenshot of $1" >&2; exit 1; }
}
# The URLs snnrun prints: the training view asked for by the URL (MLflow 3.17 opens
# GenAI otherwise; the experiment-kind tag alone does not switch it).
VIEW="workflowType=machine_learning"
shot "http://127.0.0.1:$PORT/#/experiments/$EXP/runs?$VIEW&viewStateShareKey=snnrun" \
  "$OUT/mlflow_experiment.png"
shot "http://127.0.0.1:$PORT/#/experiments/$EXP/runs/$RUN?$VIEW" "$OUT/mlflow_run.png"
shot "http://127.0.0.1:$PORT/#/experiments/$EXP/runs/$RUN/artifacts?$VIEW" \
  "$OUT/mlflow_run_artifacts.png"
# What a bare URL shows (the view a first visit gets without the parameter).
shot "http://127.0.0.1:$PORT/#/experiments/$EXP" "$WORK/bare.png"
echo "screenshots: $OUT/mlflow_experiment.png $OUT/mlflow_run.png $OUT/mlflow_run_artifacts.png"
