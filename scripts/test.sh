#!/usr/bin/env bash
# Installs what is needed, then runs the type check, the linter and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/test-tools.sh
export PATH="$PWD/node_modules/.bin:$PWD/.cache/bin:$PATH"
npm run --silent typecheck
npm run --silent lint
npm test
