#!/usr/bin/env bash
# What the tests check Xenos with, beside what it runs on: Prometheus's promtool (from Debian's
# package, only the binary: no service is installed or started), in .cache/bin.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null && [[ ! -x .cache/bin/promtool ]]; then
  echo "test-tools: fetching promtool (Debian package prometheus)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -qq prometheus 2>/dev/null && dpkg-deb -x prometheus_*.deb x)
  install -D -m 755 "$work/x/usr/bin/promtool" .cache/bin/promtool
fi
