#!/usr/bin/env bash
# Shared by scripts/run.sh and scripts/test.sh: a venv in .venv with dockerproxy
# installed from this checkout (a real, non-editable install: it proves the
# twistd plugin ships in the wheel). Extra pip "extras" come as arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    else
        echo "setup: python3 with venv and ensurepip is required (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
extras=${1:-}
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --force-reinstall --no-deps "." >/dev/null
.venv/bin/python -m pip install -q "$spec"
