#!/usr/bin/env bash
# Set up and run dockerproxy: a Docker Hub mirror on tcp:5000 unless options say otherwise.
#   scripts/run.sh [dockerproxy options...]     e.g. --listen tcp:5000 --route HOST=URL
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/twistd --nodaemon --pidfile= dockerproxy "$@"
