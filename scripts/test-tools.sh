#!/usr/bin/env bash
# Installs the tools `make test` needs beside cargo, from Debian packages, when they are
# missing: promtool (package `prometheus`), which host/tests/ops.rs runs on every scrape, and
# Chromium (package `chromium`), which host/tests/dashboard.rs drives headless.
# Needs root to install; does nothing when everything is there.
set -euo pipefail

need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test-tools.sh: missing ${need[*]}; run it as root to install" >&2
  exit 2
fi
echo "installing ${need[*]}" >&2
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
install "${need[@]}" || { apt-get update -q >/dev/null && install "${need[@]}"; }
