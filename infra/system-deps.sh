#!/usr/bin/env bash
# The system programs the test suite drives: Debian's Chromium (browser tests)
# and docker-compose (validates docker-compose.yml). Installed with apt when
# missing and we may; otherwise we say what to install.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
else
  echo "The tests need: ${missing[*]} (on Debian: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
