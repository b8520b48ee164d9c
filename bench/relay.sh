#!/usr/bin/env bash
# TURN relay benchmark: tern-relay vs coturn vs the bare forwarder, one run,
# same machine, same generator (tern-loadgen). Results: docs/benchmarks.md,
# section "TURN relay".
#
# Five targets: tern-relay as it runs by default (media between two of its
# own allocations, which is every Tern call, is handed over in memory) and
# with --no-local-delivery (through the kernel, like coturn); coturn; the
# bare forwarder with --local-delivery (the floor for the in-memory path)
# and without (the floor for the kernel path).
#
#   bench/relay.sh              # full run (~20 min on 2 vCPU)
#   bench/relay.sh --profile    # also `perf record -g` tern-relay under load
#                               # (report on stderr; with RESULTS_DIR also saved)
#
# For each relay (started fresh for every phase, so nothing left over from
# a previous phase is measured) it measures:
#   (a) highest zero-loss relayed packet rate: tern-loadgen --search over
#       SEARCH_PAIRS pairs (the aggregate rate doubles, then bisects, 160-byte
#       payloads); "≥" marks a rate bounded by the generator (the next rate
#       up was sent short with nothing lost): the target carries at least it.
#       Searched ROUNDS times (default 3), the targets taking turns within a
#       round; reported per round and as medians, with the rate per relay
#       core (the rate over the relay core's utilisation at it: what a full
#       core carries at that cost per packet, which is what a generator-bound
#       search cannot show directly);
#   (a') the same with a latency bound: zero loss and p99 <= P99_BOUND_US
#       (default 1000 µs), since zero loss bought with deep socket buffers
#       and tens of milliseconds of queueing is useless for voice;
#   (b) relay CPU seconds per million relayed packets at the best clean step
#       (utime+stime of the relay's /proc/<pid>/stat, all threads);
#   (c) one-way latency at LAT_PAIRS pairs x 2 streams x 50 pps (1,000 pairs =
#       2,000 streams = 100k pps), and again with the same 2,000 streams at
#       LAT_LOW_PPS per stream (default 10, i.e. 20k pps), a load all three
#       can carry, so latencies are compared where nothing is saturated;
#   (d) user-space memory per allocation: VmRSS delta over MEM_PAIRS x 2
#       allocations (each with a permission and a channel) held idle.
# A "relayed packet" is one client-to-client delivery (ChannelData in, UDP to
# the other relayed address, in again, ChannelData out; in memory: ChannelData
# in, ChannelData out).
#
# 2 cores: the relay is pinned to CPU $RELAY_CPU and the generator to
# $GEN_CPU (taskset), so each gets one core; loopback delivery work lands on
# the sender's core. Other load on the machine skews everything: the script
# prints the load average first.
#
# coturn is configured like tern-relay: REST secret (use-auth-secret),
# loopback peers allowed, UDP only (no TCP/TLS/DTLS listeners, no CLI),
# listener and relay IP 127.0.0.1, logs to stdout sent to /dev/null, and one
# relay thread (--relay-threads 1); everything is pinned to one core anyway.
# tern-relay runs with one datapath thread (--threads 1: the relay has one
# core here), RUST_LOG=warn, output to /dev/null.
#
# Relay and generator run under SCHED_FIFO (chrt -f 10; PRIO=nice uses
# nice -n -10 instead) so that other work on a shared VM (builds, browser
# tests) does not preempt the measured processes; the same for all three
# relays. The kernel's RT throttling (sched_rt_runtime_us) still leaves 5 %
# of each core to everything else, and neither process spins when idle.
# A search rate that loses packets is tried a second time before it counts
# as lossy (tern-loadgen --attempts 2), again against one-off preemptions.
#
# Knobs (environment): PRIO (fifo | nice), SEARCH_PAIRS (500), ROUNDS (3), SEARCH_START (2000 pkt/s),
# P99_BOUND_US (1000), LAT_PAIRS (1000), LAT_SECS (10), LAT_LOW_PPS (10),
# MEM_PAIRS (5000), STEP_SECS (3), RELAY_CPU (0), GEN_CPU (1), TARGETS
# ("tern tern-kernel coturn bare-local bare"), RESULTS_DIR (keep the JSON reports), TERN_RELAY_BIN (benchmark that tern-relay binary
# instead of building this checkout's). Needs: cargo, coturn (turnserver),
# taskset, python3; perf for --profile. Binaries come from this repo's cargo
# target dir.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=0
[ "${1:-}" = "--profile" ] && PROFILE=1

SEARCH_PAIRS=${SEARCH_PAIRS:-500}
ROUNDS=${ROUNDS:-3}
LAT_PAIRS=${LAT_PAIRS:-1000}
LAT_SECS=${LAT_SECS:-10}
LAT_LOW_PPS=${LAT_LOW_PPS:-10}
SEARCH_START=${SEARCH_START:-2000}
export P99_BOUND_US=${P99_BOUND_US:-1000}
case "${PRIO:-fifo}" in
  fifo) PRIO_CMD=(chrt -f 10) ;;
  nice) PRIO_CMD=(nice -n -10) ;;
  *) echo "PRIO must be fifo or nice" >&2; exit 2 ;;
esac
MEM_PAIRS=${MEM_PAIRS:-5000}
STEP_SECS=${STEP_SECS:-3}
RELAY_CPU=${RELAY_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
TARGETS=${TARGETS:-tern tern-kernel coturn bare-local bare}
SECRET="bench-$RANDOM-$RANDOM-$RANDOM-$RANDOM-a-32-byte-secret"
PORT=13478

command -v turnserver >/dev/null || { echo "turnserver not found: apt-get install coturn" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset not found (util-linux)" >&2; exit 1; }

echo "== building (release)" >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if [ -n "${TERN_RELAY_BIN:-}" ]; then
  TERN_RELAY=$TERN_RELAY_BIN
  cargo build --release -q -p tern-loadgen --bin tern-loadgen
else
  TERN_RELAY="$TARGET_DIR/release/tern-relay"
  cargo build --release -q -p edge-relay --bin tern-relay -p tern-loadgen --bin tern-loadgen
fi
LOADGEN="$TARGET_DIR/release/tern-loadgen"

# Each allocation is a socket on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d)
RELAY_PID=""
stop_relay() {
  if [ -n "$RELAY_PID" ]; then
    kill "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=""
  fi
}
trap 'stop_relay; rm -rf "$WORK"' EXIT

# tern-relay's internet-facing quotas (per-user allocations, per-IP
# Allocate rate, per-allocation bandwidth) are off here: every stream comes
# from 127.0.0.1, and coturn runs without equivalent limits.
start_relay() { # $1 = tern | coturn | bare
  stop_relay
  case "$1" in
    tern|tern-kernel)
      local kernel=(); [ "$1" = tern-kernel ] && kernel=(--no-local-delivery)
      TERN_RELAY_SECRET="$SECRET" RUST_LOG=warn "${PRIO_CMD[@]}" taskset -c "$RELAY_CPU" "$TERN_RELAY" \
        --listen "127.0.0.1:$PORT" --allow-peer 127.0.0.0/8 --drain-ms 0 \
        --max-allocations-per-user 0 --allocate-rate-per-ip 0 --bandwidth-kbps 0 --threads 1 \
        "${kernel[@]}" >/dev/null 2>&1 &
      ;;
    coturn)
      "${PRIO_CMD[@]}" taskset -c "$RELAY_CPU" turnserver -n --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 \
        --listening-port "$PORT" --use-auth-secret --static-auth-secret "$SECRET" --realm tern \
        --allow-loopback-peers --no-tls --no-dtls --no-tcp --no-tcp-relay --no-cli \
        --relay-threads 1 --log-file stdout --simple-log --no-software-attribute \
        --userdb "$WORK/turndb" --pidfile "$WORK/turnserver.pid" >/dev/null 2>&1 &
      ;;
    bare|bare-local)
      local local=(); [ "$1" = bare-local ] && local=(--local-delivery)
      "${PRIO_CMD[@]}" taskset -c "$RELAY_CPU" "$LOADGEN" forwarder --listen "127.0.0.1:$PORT" "${local[@]}" >/dev/null 2>&1 &
      ;;
  esac
  RELAY_PID=$!
  # Ready when one pair gets through.
  local kind=turn; case "$1" in bare*) kind=bare ;; esac
  for _ in $(seq 50); do
    if "$LOADGEN" --target "$kind" --server "127.0.0.1:$PORT" --secret "$SECRET" \
        --pairs 1 --duration 0.2 --json >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  echo "$1 did not come up" >&2
  exit 1
}

gen() { # $1 = target, rest = loadgen flags; JSON on stdout
  local kind=turn; case "$1" in bare*) kind=bare ;; esac
  shift
  "${PRIO_CMD[@]}" taskset -c "$GEN_CPU" "$LOADGEN" --target "$kind" --server "127.0.0.1:$PORT" --secret "$SECRET" \
    --relay-pid "$RELAY_PID" --json "$@"
}

echo "== $(date -u +%FT%TZ) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for t in $TARGETS; do
  echo "== $t: memory ($MEM_PAIRS pairs idle)" >&2
  start_relay "$t"
  gen "$t" --pairs "$MEM_PAIRS" --duration 0 --hold 2 --setup-window 128 >"$WORK/$t-mem.json"

  echo "== $t: zero-loss search with p99 <= ${P99_BOUND_US} µs ($SEARCH_PAIRS pairs)" >&2
  start_relay "$t"
  gen "$t" --pairs "$SEARCH_PAIRS" --search --search-start "$SEARCH_START" --step-secs "$STEP_SECS" \
    --max-p99-us "$P99_BOUND_US" >"$WORK/$t-searchp99.json"

  echo "== $t: latency ($LAT_PAIRS pairs, 50 pps per stream, ${LAT_SECS}s)" >&2
  start_relay "$t"
  gen "$t" --pairs "$LAT_PAIRS" --pps 50 --duration "$LAT_SECS" >"$WORK/$t-lat.json"

  echo "== $t: latency ($LAT_PAIRS pairs, $LAT_LOW_PPS pps per stream, ${LAT_SECS}s)" >&2
  start_relay "$t"
  gen "$t" --pairs "$LAT_PAIRS" --pps "$LAT_LOW_PPS" --duration "$LAT_SECS" >"$WORK/$t-latlow.json"
  echo "   load average after $t: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

  if [ "$PROFILE" = 1 ] && [ "$t" = tern ]; then
    echo "== tern: perf record -g at 1,000 pairs x 50 pps" >&2
    start_relay tern
    # Rust release builds have no frame pointers: unwind with DWARF.
    # perf itself runs above the measured processes' priority, or under
    # SCHED_FIFO it cannot drain its buffers and most samples are lost.
    chrt -f 20 perf record -q -F 999 --call-graph dwarf,16384 -p "$RELAY_PID" -o "$WORK/perf.data" \
      -- sleep 8 >/dev/null 2>&1 &
    PERF_PID=$!
    gen tern --pairs "$LAT_PAIRS" --pps 50 --duration 6 >/dev/null
    wait "$PERF_PID" || true
    { perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --percent-limit 0.7 \
        --stdio -g none 2>/dev/null | grep -v '^$' | grep -v '^#' | head -60
      echo "---- by caller (children) ----"
      perf report -i "$WORK/perf.data" --children --sort symbol --percent-limit 4 \
        --stdio -g none 2>/dev/null | grep -v '^$' | grep -v '^#' | head -60
    } | sed -E 's/ +/ /g; s/ - - ?$//' >"$WORK/perf-tern.txt" || true
    echo "---- perf: tern-relay at $LAT_PAIRS pairs x 50 pps ----" >&2
    cat "$WORK/perf-tern.txt" >&2
  fi
  stop_relay
done

# (a) in rounds: every target's search once per round, targets in turn, so
# the targets of one round are measured minutes apart and a slow spell of
# the VM (its cost per packet moves by up to 30 % between runs) lands on
# all of them rather than on one; the summary takes each target's median
# and the median of the per-round ratios.
for r in $(seq "$ROUNDS"); do
  for t in $TARGETS; do
    echo "== round $r/$ROUNDS, $t: zero-loss search ($SEARCH_PAIRS pairs)" >&2
    start_relay "$t"
    gen "$t" --pairs "$SEARCH_PAIRS" --search --search-start "$SEARCH_START" --step-secs "$STEP_SECS" \
      >"$WORK/$t-search-r$r.json"
  done
done
stop_relay

# RESULTS_DIR=dir keeps every generator report (JSON, with all search steps).
if [ -n "${RESULTS_DIR:-}" ]; then
  mkdir -p "$RESULTS_DIR" && cp "$WORK"/*.json "$RESULTS_DIR"/
  if [ -f "$WORK/perf-tern.txt" ]; then cp "$WORK/perf-tern.txt" "$RESULTS_DIR"/; fi
fi

python3 - "$WORK" "$ROUNDS" $TARGETS <<'EOF'
import json, os, statistics, sys
work, rounds, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(name):
    p = os.path.join(work, name)
    return json.load(open(p)) if os.path.exists(p) else None
def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def search_round(t, r):
    """One round's zero-loss search: rate, whether the generator bounded it,
    CPU per packet at that rate, the relay core's utilisation there, and the
    rate per relay core (rate / utilisation: what one full core would carry
    at that cost per packet)."""
    d = load(f"{t}-search-r{r}.json")
    s = (d or {}).get("search") or {}
    best = s.get("best") or {}
    rate, cpu, secs = s.get("zero_loss_pps"), best.get("relay_cpu_secs"), best.get("secs")
    util = cpu / secs if cpu and secs else None
    return {"rate": rate, "gen": bool(s.get("generator_limited")),
            "cpu": best.get("relay_cpu_secs_per_mpkt"), "util": util,
            "per_core": rate / util if rate and util else None, "p99": best.get("p99_us")}
rounds_of = {t: [search_round(t, r) for r in range(1, rounds + 1)] for t in targets}
rows = {}
for t in targets:
    mem, lat, low = load(f"{t}-mem.json"), load(f"{t}-lat.json"), load(f"{t}-latlow.json")
    bounded = (load(f"{t}-searchp99.json") or {}).get("search") or {}
    rs = rounds_of[t]
    lrun = low["run"] if low else {}
    run = lat["run"] if lat else {}
    med = median([x["rate"] for x in rs])
    rows[t] = {
        "zero_loss": med,
        # "≥" when a round at the median was bounded by the generator.
        "gen_limited": any(x["gen"] and x["rate"] == med for x in rs),
        "per_core": median([x["per_core"] for x in rs]),
        "cpu_per_mpkt": median([x["cpu"] for x in rs]),
        "best_p99": median([x["p99"] for x in rs]),
        "bounded": bounded.get("zero_loss_pps"),
        "bounded_cpu": (bounded.get("best") or {}).get("relay_cpu_secs_per_mpkt"),
        "gen_cpu": (run.get("generator_cpu_secs", 0) / run["secs"] * 100) if run.get("secs") else None,
        "p50": run.get("p50_us"), "p99": run.get("p99_us"), "max": run.get("max_us"),
        "lat_sent": run.get("sent"), "lat_lost": run.get("lost"), "lat_sent_pps": run.get("sent_pps"),
        "low_p50": lrun.get("p50_us"), "low_p99": lrun.get("p99_us"), "low_max": lrun.get("max_us"),
        "low_sent": lrun.get("sent"), "low_lost": lrun.get("lost"), "low_pps": lrun.get("offered_pps"),
        "low_cpu": lrun.get("relay_cpu_secs_per_mpkt"),
        "bytes_per_alloc": (mem.get("memory") or {}).get("bytes_per_allocation") if mem else None,
        "allocs": mem["setup"]["allocations"] if mem else None,
        "alloc_rate": mem["setup"]["allocations_per_sec"] if mem else None,
    }
def f(v, fmt="{:,.0f}"):
    return "n/a" if v is None else fmt.format(v)
names = {"tern": "tern-relay", "tern-kernel": "tern-relay --no-local-delivery",
         "coturn": "coturn 4.6", "bare": "bare forwarder", "bare-local": "bare forwarder --local-delivery"}
print("| | " + " | ".join(names.get(t, t) for t in targets) + " |")
print("|---|" + "---|" * len(targets))
def row(label, key, fmt="{:,.0f}"):
    print(f"| {label} | " + " | ".join(f(rows[t][key], fmt) for t in targets) + " |")
# "≥": the search was bounded by the generator, not by the target.
print(f"| (a) zero-loss rate, pkt/s (one relay core; median of {rounds}) | " + " | ".join(
    ("≥ " if rows[t]["gen_limited"] else "") + f(rows[t]["zero_loss"]) for t in targets) + " |")
row(f"(a) zero-loss rate per relay core (rate / core utilisation; median of {rounds})", "per_core")
row("(a) p99 one-way latency at that rate, µs (median)", "best_p99")
row("(b) relay CPU s per 1M packets at that rate (median)", "cpu_per_mpkt", "{:.2f}")
row(f"(a') zero-loss rate with p99 <= {os.environ.get('P99_BOUND_US', '1000')} µs, pkt/s", "bounded")
row("(b) relay CPU s per 1M packets at the (a') rate", "bounded_cpu", "{:.2f}")
row("(c) 2,000 streams x 50 pps: p50 one-way latency, µs", "p50")
row("(c) 2,000 streams x 50 pps: p99, µs", "p99")
row("(c) 2,000 streams x 50 pps: max, µs", "max")
print("| (c) 2,000 streams x 50 pps: packets sent / lost | " + " | ".join(
    f"{f(rows[t]['lat_sent'])} / {f(rows[t]['lat_lost'])}" for t in targets) + " |")
row("(c) 2,000 streams x 50 pps: achieved send rate, pkt/s", "lat_sent_pps")
row("(c) 2,000 streams x 50 pps: generator CPU, % of its core", "gen_cpu")
lowpps = next((rows[t]["low_pps"] for t in targets if rows[t]["low_pps"]), None)
lab = f"2,000 streams at {f(lowpps)} pkt/s total" if lowpps else "2,000 streams, low rate"
row(f"(c') {lab}: p50, µs", "low_p50")
row(f"(c') {lab}: p99, µs", "low_p99")
row(f"(c') {lab}: max, µs", "low_max")
print(f"| (c') {lab}: packets sent / lost | " + " | ".join(
    f"{f(rows[t]['low_sent'])} / {f(rows[t]['low_lost'])}" for t in targets) + " |")
row(f"(b') {lab}: relay CPU s per 1M packets", "low_cpu", "{:.2f}")
row("(d) RSS per allocation, bytes", "bytes_per_alloc")
row("allocation setup, allocations/s", "alloc_rate")

print()
print("Zero-loss search, round by round (rate, pkt/s / relay core busy at that rate / "
      "CPU s per 1M packets / rate per relay core):")
print()
print("| round | " + " | ".join(names.get(t, t) for t in targets) + " |")
print("|---|" + "---|" * len(targets))
for r in range(rounds):
    cells = []
    for t in targets:
        x = rounds_of[t][r]
        util = None if x["util"] is None else x["util"] * 100
        cells.append(("≥ " if x["gen"] else "") + f"{f(x['rate'])} / {f(util)} % / "
                     f"{f(x['cpu'], '{:.2f}')} / {f(x['per_core'])}")
    print(f"| {r + 1} | " + " | ".join(cells) + " |")

def ratio(a, b, key):
    x, y = rows.get(a, {}).get(key), rows.get(b, {}).get(key)
    return f"{(x / y):.2f}" if x and y else "n/a"
def round_ratios(a, b, key):
    return [x[key] / y[key] if x[key] and y[key] else None
            for x, y in zip(rounds_of[a], rounds_of[b])]
def fmt_ratios(rs):
    shown = " / ".join(f(r, "{:.2f}") for r in rs)
    return f"{shown} (median {f(median(rs), '{:.2f}')})"
# Each tern-relay mode against coturn (the product comparison) and against
# the bare forwarder doing the same kind of delivery (the physical floor).
pairs = [("tern", "coturn"), ("tern", "bare-local"), ("tern-kernel", "coturn"),
         ("tern-kernel", "bare"), ("tern", "tern-kernel")]
print()
for a, b in pairs:
    if a in rows and b in rows:
        print(f"{a}/{b}, per round: rate {fmt_ratios(round_ratios(a, b, 'rate'))}; "
              f"rate per core {fmt_ratios(round_ratios(a, b, 'per_core'))}; "
              f"CPU per packet {fmt_ratios(round_ratios(a, b, 'cpu'))}")
        print(f"{a}/{b}: rate with p99 bound {ratio(a, b, 'bounded')}, "
              f"CPU per packet at the low rate {ratio(a, b, 'low_cpu')}, "
              f"p99 at the low rate {ratio(a, b, 'low_p99')}, "
              f"bytes per allocation {ratio(a, b, 'bytes_per_alloc')}")
for a, b in [("tern", "bare-local"), ("tern-kernel", "bare")]:
    if a in rows and b in rows and rows[a]["low_p99"] is not None and rows[b]["low_p99"] is not None:
        print(f"{a} p99 - {b} p99 at the low rate: {rows[a]['low_p99'] - rows[b]['low_p99']:.0f} µs")
for t in targets:
    n = sum(x["gen"] for x in rounds_of[t])
    if n:
        print(f"note: {n} of {rounds} {t} searches were bounded by the generator "
              "(the next rate up was sent short, nothing lost): those rates are floors")
EOF
