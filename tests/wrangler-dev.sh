#!/bin/sh
# `wrangler dev` for tests: the Worker exactly as wrangler.toml describes it,
# built once before wrangler starts instead of by wrangler itself.
#
# Why: with a custom [build], wrangler 4.86 builds at start and then, once
# its file watcher is ready, builds a second time and reloads the Worker.
# Requests that arrive during that reload wait for the build; on a busy
# machine that took over 5 s, and a test's request timed out (issue 15).
# So this script runs wrangler.toml's own build command (under a lock: two
# test processes must not write edge-signaling/worker/build at once) and
# serves the result with a copy of wrangler.toml that has no [build] table:
# wrangler bundles and serves the built Worker, with no watcher and no
# second build.
#
# Usage (from anywhere): tests/wrangler-dev.sh <state dir> [wrangler dev flags...]
# The state dir receives the generated config; the flags go to `wrangler dev`.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
state=$1
shift
mkdir -p "$state"

command=$(sed -n '/^\[build\]/,/^\[/s/^command = "\(.*\)"$/\1/p' "$root/wrangler.toml")
if [ -z "$command" ]; then
    echo "wrangler.toml has no [build] command" >&2
    exit 2
fi
mkdir -p "$root/target"
(
    cd "$root"
    flock 9
    sh -c "$command"
) 9>"$root/target/.worker-build.lock"

# wrangler.toml without its [build] table, `main` made absolute (the copy
# lives in the state dir).
awk -v root="$root" '
    /^\[/ { skip = ($0 == "[build]") }
    skip { next }
    /^main = "/ { sub(/^main = "/, "main = \"" root "/") }
    { print }
' "$root/wrangler.toml" >"$state/wrangler.toml"

exec "$root/node_modules/.bin/wrangler" dev -c "$state/wrangler.toml" "$@"
