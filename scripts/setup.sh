#!/usr/bin/env bash
# Installs what Xenos needs on a Debian machine: system packages (only those missing) and the npm
# dependencies, which include Node 22 itself. Safe to run again; it does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v busybox >/dev/null || need+=(busybox-static)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
command -v getfattr >/dev/null || need+=(attr)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v socat >/dev/null || need+=(socat)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}" >&2
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${need[@]}" >/dev/null
fi

# VM templates are built from Debian's kernel and busybox packages (apt-get download): the
# package lists must know them.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq
fi

# npm ci only when the lock file changed since the last install.
stamp=node_modules/.xenos-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -x node_modules/node/bin/node || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: installing npm dependencies (with Node 22)" >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

# The compiled JavaScript that bin/xenos and bin/xenosd run, when a source changed since the last build.
root=$PWD
. bin/entry.sh
if ! build_is_fresh; then
  echo "setup: compiling the sources to dist/" >&2
  bash scripts/build.sh
fi
