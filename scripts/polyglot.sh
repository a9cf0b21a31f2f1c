#!/usr/bin/env bash
# Builds the polyglot example guests into target/wasm/: examples/py-kv (Python, versions 1 and
# 2) with componentize-py, examples/js-ratelimit (JavaScript) with componentize-js. Installs the
# pinned toolchains under target/polyglot/ first (a Python venv from pip, node modules from npm),
# so nothing outside the checkout changes. Needs python3 (with venv) and node 20 with npm.
# A guest is rebuilt only when its sources or the WIT are newer than it.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPONENTIZE_PY=0.25.1
COMPONENTIZE_JS=0.23.0
tools=target/polyglot
out=target/wasm
wit=wit/0.2.0
mkdir -p "$tools" "$out"

missing() {
  echo "scripts/polyglot.sh: $1 is needed to build the Python and JavaScript example guests" >&2
  echo "  (install it, or build everything else with make build; nothing else depends on them)" >&2
  exit 2
}
command -v python3 >/dev/null || missing "python3"
command -v node >/dev/null || missing "node (20 or later)"
command -v npm >/dev/null || missing "npm"

# Is $1 older than any of the other paths (files or directories, searched)?
stale() {
  local target=$1
  shift
  # (componentize-py leaves __pycache__ directories beside the sources: not a change.)
  [ ! -e "$target" ] || [ -n "$(find "$@" -newer "$target" -not -path '*__pycache__*' -print -quit)" ]
}

py=$tools/venv/bin/componentize-py
if [ ! -x "$py" ] || ! "$py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY"; then
  echo "installing componentize-py $COMPONENTIZE_PY into $tools/venv" >&2
  python3 -m venv "$tools/venv" || missing "python3's venv module (Debian: python3-venv)"
  "$tools/venv/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY"
fi
js=$tools/js/node_modules/@bytecodealliance/componentize-js/src/cli.js
if [ ! -f "$js" ] || ! grep -q "\"version\": \"$COMPONENTIZE_JS\"" "$tools/js/node_modules/@bytecodealliance/componentize-js/package.json"; then
  echo "installing componentize-js $COMPONENTIZE_JS into $tools/js" >&2
  mkdir -p "$tools/js"
  (cd "$tools/js" && npm install -s --no-audit --no-fund --no-save "@bytecodealliance/componentize-js@$COMPONENTIZE_JS")
fi

for version in 1 2; do
  name=py_kv$([ $version = 1 ] || echo _v$version).wasm
  if stale "$out/$name" examples/py-kv "$wit"; then
    echo "building $out/$name (componentize-py)" >&2
    "$py" -d "$wit" -w fsm componentize app -p "examples/py-kv/v$version" -p examples/py-kv \
      -o "$out/$name.tmp" >/dev/null
    mv "$out/$name.tmp" "$out/$name"
  fi
done

if stale "$out/js_ratelimit.wasm" examples/js-ratelimit "$wit"; then
  echo "building $out/js_ratelimit.wasm (componentize-js)" >&2
  # componentize-js resolves the source from the working directory. No HTTP: the host does not
  # provide wasi:http.
  (cd examples/js-ratelimit && node "../../$js" ratelimit.js -w "../../$wit" -n fsm \
    -d http -d fetch-event -o "../../$out/js_ratelimit.wasm.tmp" >/dev/null)
  mv "$out/js_ratelimit.wasm.tmp" "$out/js_ratelimit.wasm"
fi
