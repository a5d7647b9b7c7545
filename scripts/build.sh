#!/usr/bin/env bash
# Compiles src/ to JavaScript in dist/, which bin/xenos and bin/xenosd run while it is up to date
# (bin/entry.sh): type-stripped sources cost every process about 25 MiB more and every start a
# compile of each file.
set -euo pipefail
cd "$(dirname "$0")/.."
# Stamped with the time the compile starts: a source changed meanwhile is newer than the build.
stamp=$(mktemp)
rm -rf dist
node_modules/.bin/tsc -p tsconfig.build.json
# The dashboard's browser files are served as they are.
cp -r src/web/ui dist/web/ui
mv "$stamp" dist/.built
chmod 644 dist/.built
