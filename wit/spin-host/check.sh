#!/bin/sh
# Does the signaling component run on Spin 4.0.x's HTTP trigger? Checks the
# built artifact against wit/spin-host/world.wit with
# `wasm-tools component targets`: every import must be something Spin
# provides, and the wasi:http incoming-handler export must be there. Also
# checks that origin's entry point, tern:signaling/handler, is still exported.
#
# Usage: wit/spin-host/check.sh [component.wasm]
# Needs: wasm-tools (cargo install wasm-tools --locked), python3, and the
# component built (cargo build -p origin builds it; so does `spin build`).
set -eu
cd "$(dirname "$0")/../.."
wasm=${1:-target/component/wasm32-wasip2/component/signaling_component.wasm}

if ! command -v wasm-tools >/dev/null 2>&1; then
    echo "wasm-tools is not installed: cargo install wasm-tools --locked" >&2
    exit 2
fi
if [ ! -f "$wasm" ]; then
    echo "$wasm is missing: build it first (cargo build -p origin)" >&2
    exit 2
fi

# The WASI 0.2 packages come from the wasip2 crate the component builds
# with (cargo has it locally), so they are exactly the published WIT.
wasip2=$(cargo metadata --format-version 1 --locked --filter-platform wasm32-wasip2 |
    python3 -c 'import json,sys,os
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "wasip2"))')

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/deps/keyvalue"
cp wit/spin-host/world.wit "$tmp/"
cp "$wasip2"/wit/deps/*.wit "$tmp/deps/"
cp wit/deps/keyvalue/*.wit "$tmp/deps/keyvalue/"

wasm-tools component targets "$tmp" "$wasm" --world tern:spin-host/http-trigger
echo "ok: $wasm targets tern:spin-host/http-trigger (Spin 4.0.x HTTP trigger)"

if ! wasm-tools component wit "$wasm" | grep -q 'export tern:signaling/handler@0.1.0;'; then
    echo "the component no longer exports tern:signaling/handler (origin's entry point)" >&2
    exit 1
fi
echo "ok: still exports tern:signaling/handler@0.1.0"
