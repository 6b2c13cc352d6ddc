#!/usr/bin/env bash
# The GPU check on a lent GPU host: bare, offline, minutes long. From the repository root:
#
#   bash infra/gpu_check.sh [bench.gpu_check options, e.g. --only qlora,fsdp]
#
# It installs the wheels `make gpu-wheels` left in .whl/ (they travel with the working tree),
# runs every check of bench/gpu_check.py within 8 minutes and leaves the table, the JSON
# behind it and the whole log in $OUT (var/gpu-check by default).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-var/gpu-check}"
python="${PYTHON:-python3}"
site="${GPU_CHECK_SITE:-/tmp/tuneyard-gpu-check-site}"
mkdir -p "$out"
if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "no wheels in .whl/: run 'make gpu-wheels' first, and carry .whl" >&2
    exit 2
fi

# The host's python3 is itself a virtualenv holding torch; a virtualenv made from it would
# see the base interpreter's packages, not torch. So the wheels go to a folder of their own,
# first on PYTHONPATH: ahead of the host's transformers, which is older than the engine's.
"$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# No check starts after 400 s; one that runs over is stopped at 450 s, and the rows made
# until then are already in $out.
set +e
timeout --kill-after=20 450 "$python" -m bench.gpu_check --out "$out" --budget-seconds 400 "$@" 2>&1 \
    | tee "$out/gpu_check.log"
status=${PIPESTATUS[0]}
exit "$status"
