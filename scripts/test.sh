#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh Debian machine:
# Debian packages (when root and missing), a venv with the test extras, ruff (lint and
# format), mypy, pytest.
#   scripts/test.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers for the integration tests and the unit-file check.
DEBIAN_PACKAGES=(docker-registry skopeo nginx-light systemd curl docker.io podman containerd chromium fonts-wqy-microhei apache2-utils redis-server)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "test: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "test: missing Debian packages (run as root to install): ${missing[*]}" >&2
        exit 1
    fi
fi

bash scripts/setup.sh test
SOURCES=(dockerproxy tests bench twisted proxy.tac)
.venv/bin/ruff check "${SOURCES[@]}"
.venv/bin/ruff format --check "${SOURCES[@]}"
.venv/bin/mypy    # dockerproxy/, with the settings in pyproject.toml
exec .venv/bin/pytest "$@"
