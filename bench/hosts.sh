#!/usr/bin/env bash
# Signaling hosts side by side: the same workload (tern-hostbench: rooms of
# two participants who join, signal each way, ping and leave, one frame at a
# time) against every host Tern's signaling runs on, in one run on one
# machine. Results: docs/benchmarks.md, "Signaling hosts".
#
#   cargo build --release -p origin -p tern-tests --bins && npm ci
#   SPIN_BIN=path/to/spin bench/hosts.sh     # ROOMS=300 by default
#
# Hosts (each with one relay heartbeating into it):
#   origin           tern serve, the native WebSocket path into the component
#                    (embedded store)
#   spin-http        tern spin serving the Spin artifact (the very .wasm
#                    spin.toml names), protocol v1 over the HTTP transport
#   spin-gateway     the same, with tern gateway bridging WebSockets to it
#   spin-up-sqlite   real Spin (spin up, SPIN_BIN or spin on the PATH) on its
#                    default SQLite store, over the HTTP transport
#   spin-up-redis    real Spin on its Redis store (the multi-instance setup);
#                    CPU counts spin and redis-server
#   worker           the Cloudflare Worker under wrangler dev --local
# For each: join->joined and signal->delivered latency seen by the client,
# and the host's CPU time per frame (/proc utime+stime of its processes:
# tern serve; tern spin; tern spin + tern gateway; spin; spin + redis-server;
# workerd).
# Afterwards, failover detection on each design (relay SIGKILL -> reroute)
# comes from the conformance suite:
#   cargo test -p tern-tests --test conformance -- --nocapture | grep figure
set -euo pipefail
cd "$(dirname "$0")/.."
ROOMS=${ROOMS:-300}
BIN=target/release
export TERN_API_SECRET=test-api-secret-of-at-least-32-bytes TERN_RELAY_SECRET=test-relay-secret-of-at-least-32-bytes RUST_LOG=warn
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Start a command in its own process group; its PID (= group id) goes to $LAST.
start() { setsid "$@" >>"$work/log" 2>&1 & LAST=$!; pids+=("$LAST"); }
relay_into() {
  start "$BIN/tern" relay --id "r-$1" --region "$1" --listen "127.0.0.1:$(port)" \
    --signaling "$2" --allow-peer 127.0.0.0/8 --relay-ports ephemeral --allocate-rate-per-ip 0
}
wait_relay() {
  for _ in $(seq 1 3000); do
    curl -sf "$1/v1/relays" 2>/dev/null | grep -q '"healthy":true' && return 0
    sleep 0.2
  done
  echo "no healthy relay at $1" >&2; tail -50 "$work/log" >&2; return 1
}
bench() { "$BIN/tern-hostbench" --rooms "$ROOMS" "$@"; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), rooms $ROOMS"

p=$(port); start "$BIN/tern" serve --listen "127.0.0.1:$p" --data-dir "$work/origin" --sockets-per-ip 0; origin=$LAST
relay_into origin "http://127.0.0.1:$p"; wait_relay "http://127.0.0.1:$p"
bench --url "ws://127.0.0.1:$p/v1/signal" --pid "$origin" --label origin

s=$(port); start "$BIN/tern" spin --manifest spin.toml --listen "127.0.0.1:$s" --data-dir "$work/spin"; spin=$LAST
relay_into spin "http://127.0.0.1:$s"; wait_relay "http://127.0.0.1:$s"
bench --url "http://127.0.0.1:$s/v1/http" --pid "$spin" --label spin-http
g=$(port); start "$BIN/tern" gateway --listen "127.0.0.1:$g" --upstream "http://127.0.0.1:$s/v1/http" --sockets-per-ip 0; gw=$LAST
wait_relay "http://127.0.0.1:$g"
bench --url "ws://127.0.0.1:$g/v1/signal" --pid "$spin" --pid "$gw" --label spin-gateway

spin_bin=${SPIN_BIN:-$(command -v spin || true)}
if [ -z "$spin_bin" ]; then
  echo "no Spin CLI: install Spin >= 4.0 and put spin on the PATH, or set SPIN_BIN" >&2
  exit 2
fi
spin_up() { # port, label, extra spin up flags...
  local p=$1 label=$2
  shift 2
  start "$spin_bin" up --from spin.toml --listen "127.0.0.1:$p" --state-dir "$work/$label" \
    --env "TERN_API_SECRET=$TERN_API_SECRET" --env "TERN_RELAY_SECRET=$TERN_RELAY_SECRET" "$@"
}
# `spin up` runs the trigger in a child process: count its whole group.
group_pids() { pgrep -g "$1" | sed 's/^/--pid /' | tr '\n' ' '; }
u=$(port); spin_up "$u" spin-up-sqlite; spinup=$LAST
relay_into spin-up "http://127.0.0.1:$u"; wait_relay "http://127.0.0.1:$u"
# shellcheck disable=SC2046 # one --pid per process
bench --url "http://127.0.0.1:$u/v1/http" $(group_pids "$spinup") --label spin-up-sqlite
r=$(port); start redis-server --port "$r" --bind 127.0.0.1 --save '' --appendonly no; redis=$LAST
printf '[key_value_store.default]\ntype = "redis"\nurl = "redis://127.0.0.1:%s"\n' "$r" >"$work/redis.toml"
u=$(port); spin_up "$u" spin-up-redis --runtime-config-file "$work/redis.toml"; spinup=$LAST
relay_into spin-up-redis "http://127.0.0.1:$u"; wait_relay "http://127.0.0.1:$u"
# shellcheck disable=SC2046 # one --pid per process
bench --url "http://127.0.0.1:$u/v1/http" $(group_pids "$spinup") --pid "$redis" --label spin-up-redis

# tests/wrangler-dev.sh: the Worker built once, no rebuild inside wrangler.
w=$(port)
CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_SEND_METRICS=false start tests/wrangler-dev.sh "$work/wrangler-config" --local \
  --ip 127.0.0.1 --port "$w" --inspector-port "$(port)" --persist-to "$work/wrangler" \
  --show-interactive-dev-session=false \
  --var "TERN_API_SECRET:$TERN_API_SECRET" --var "TERN_RELAY_SECRET:$TERN_RELAY_SECRET"
wrangler=$LAST
relay_into worker "http://127.0.0.1:$w"; wait_relay "http://127.0.0.1:$w"
workerd=$(pgrep -g "$wrangler" workerd | sed 's/^/--pid /' | tr '\n' ' ')
# shellcheck disable=SC2086 # one --pid per workerd process
bench --url "ws://127.0.0.1:$w/v1/signal" $workerd --label worker
