#!/usr/bin/env bash
# What the tests check Xenos with, beside what it runs on: Chromium (the dashboard, through
# playwright-core), Python 3 (its xmlrpc.client), and Prometheus's promtool (from Debian's
# package, only the binary: no service is installed or started) in .cache/bin.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v python3 >/dev/null || need+=(python3-minimal)
if ((${#need[@]})); then
  echo "test-tools: installing ${need[*]}" >&2
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v promtool >/dev/null && [[ ! -x .cache/bin/promtool ]]; then
  echo "test-tools: fetching promtool (Debian package prometheus)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -qq prometheus 2>/dev/null && dpkg-deb -x prometheus_*.deb x)
  install -D -m 755 "$work/x/usr/bin/promtool" .cache/bin/promtool
fi
