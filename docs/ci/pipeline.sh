#!/bin/sh
# Tuneyard's example CI pipeline: upload the data, fine-tune, evaluate, gate on a metric,
# register the model and ask for its promotion. The GitHub Actions and GitLab CI examples beside
# this file run it; the test suite runs it against its live server (tests/e2e/test_ci_example.py).
#
# Needs the `tuneyard` command (pip install ./client) and, in the environment:
#   TUNEYARD_URL, TUNEYARD_TOKEN   the server and a token with the write scope
#   PROJECT, BASE_MODEL            the project and its base model (name or id)
#   DATA, DATASET                  the data file and the dataset's name
#   CONFIG                         the training config (YAML or JSON)
#   MODEL_NAME                     the registered model's name
#   GATE_METRIC, GATE_MAX          the evaluation metric and the most it may be (e.g. perplexity 40)
#   RUN_NAME                       optional: the job's name (e.g. the commit)
set -eu

field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

tuneyard upload "$DATA" --project "$PROJECT" --name "$DATASET" | field id > dataset_version.txt
echo "dataset version $(cat dataset_version.txt)"

tuneyard submit --project "$PROJECT" --base-model "$BASE_MODEL" --dataset-version "$(cat dataset_version.txt)" \
  --config "$CONFIG" --name "${RUN_NAME:-ci}" --wait > job.json
job=$(field id < job.json)
echo "job $job succeeded"

tuneyard evaluate --project "$PROJECT" --job "$job" --dataset-version "$(cat dataset_version.txt)" \
  --metric "$GATE_METRIC" --name "gate for job $job" --wait > evaluation.json
score=$(python3 -c 'import json, sys; print(json.load(open("evaluation.json"))["metrics"][sys.argv[1]])' "$GATE_METRIC")
if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$score" "$GATE_MAX"; then
  echo "gate passed: $GATE_METRIC $score <= $GATE_MAX"
else
  echo "gate failed: $GATE_METRIC $score > $GATE_MAX" >&2
  exit 1
fi

version=$(tuneyard register "$job" --name "$MODEL_NAME" | field id)
promotion=$(tuneyard promote "$version" --target production --comment "from job $job, $GATE_METRIC $score" | field id)
echo "promotion $promotion requested: an approver decides in Tuneyard"
