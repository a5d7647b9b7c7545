#!/usr/bin/env bash
# Installs what is needed, then runs a local Xenos cloud (3 hosts on loopback, a service deployed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bin/xenos cloud "$@"
