#!/usr/bin/env bash
# Benchmark `campaign send` against a throttling relay and a healthy one, in the same session:
# the wall time of each and the ratio throttled/healthy (target: the throttled run <= 3x the
# healthy one). See BENCHMARKS.md, section "Faults: throttling vs healthy".
#
#   bench/faults.sh                        # 300 donors, 5 runs of each (~1 min + build)
#   RUNS=3 bench/faults.sh
#   CAMPAIGN_BIN=/tmp/new/campaign bench/faults.sh
#
# The relay is bench/fault_server.py (Python aiosmtpd, installed with pip into a venv at
# bench-data/venv-aiosmtpd), on 127.0.0.1 at a port picked free for every run; it offers
# PIPELINING, discards every message and counts what it accepted. The throttling one answers
# the first RCPT of every THROTTLE_EVERY-th donor (rows 49, 99, ..., 299 of the 300-donor
# export: 6 donors) with `421 4.7.0 Try again later, closing connection` and closes that
# connection; their later RCPTs, and everyone else's, are accepted. The healthy one accepts
# everything. Each send is
#
#   campaign send RUN --concurrency 8 --retry-delay $RETRY_DELAY --json --quiet
#
# on a fresh copy of a run of exactly COUNT donors (bench/lib.sh, exact_donors; messages from
# bench/send-campaign.toml, about 4.4 KB), segmented once. Every run checks the JSON summary
# (session.sent == COUNT, nothing deferred) and the server's counts (COUNT accepted, every
# donor exactly once, none unknown, the expected number of 421s). Healthy and throttled take
# turns going first. A server is started before and stopped after each send (not timed).
#
# Why a short retry delay: a deferred donor's first retry waits --retry-delay seconds (default
# 30, doubling, plus up to 50% jitter), by design. With the default, the throttled run cannot
# finish before the 6 retries fall due, 30-45 s after the 421s, whatever the sender does
# meanwhile, while the healthy run takes well under a second; the ratio would measure the
# retry schedule, not the sending. So the timed runs use RETRY_DELAY (default 0.2 s, about
# the 0.25 s pause a 421'd connection takes), and one more throttled run with the default
# retry delay (no --retry-delay flag) is timed and reported on its own.
#
# Environment:
#   COUNT           donors (= messages) per run (default 300)
#   RUNS            timed runs of each server (default 5); medians
#   RETRY_DELAY     --retry-delay for the timed runs, seconds (default 0.2)
#   THROTTLE_EVERY  the throttling server's N (default 50: COUNT/N donors get a 421)
#   DEFAULT_DELAY_RUN  1 (default): also one throttled run with the default retry delay; 0: skip it
#   SEED            generator seed (default 20261129)
#   CAMPAIGN_BIN    campaign binary to benchmark instead of building one from this checkout
#                   (cargo then builds only the gen_donors example, unless CAMPAIGN_GEN is set)
#   CAMPAIGN_GEN    gen_donors binary to use instead of building the example
#
# Only 127.0.0.1 is ever contacted; servers are stopped and every run directory removed when
# the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

COUNT=${COUNT:-300}
RUNS=${RUNS:-5}
RETRY_DELAY=${RETRY_DELAY:-0.2}
THROTTLE_EVERY=${THROTTLE_EVERY:-50}
DEFAULT_DELAY_RUN=${DEFAULT_DELAY_RUN:-1}
CONCURRENCY=8
SEND_TOML=bench/send-campaign.toml
THROTTLED=$((COUNT / THROTTLE_EVERY)) # rows i with i % N == N-1, for i < COUNT

AIOSMTPD_VENV=$DATA/venv-aiosmtpd

# start_fault_server EVERY: starts bench/fault_server.py (--throttle-every EVERY) on a free
# port of 127.0.0.1; sets FAULT_PORT, FAULT_PID and FAULT_STATS.
start_fault_server() {
    FAULT_PORT=$(free_port)
    FAULT_STATS=$WORK/server-stats.json
    rm -f "$FAULT_STATS"
    "$AIOSMTPD_VENV/bin/python" bench/fault_server.py --port "$FAULT_PORT" --donors "$donors" \
        --stats "$FAULT_STATS" --throttle-every "$1" >/dev/null 2>"$WORK/server.err" &
    FAULT_PID=$!
    SERVER_PIDS+=("$FAULT_PID")
    wait_listening "$FAULT_PORT" "$FAULT_PID" fault_server.py "$WORK/server.err"
}
# stop_fault_server: SIGTERM, wait for its counts, and forget its pid (so the exit trap never
# signals a pid that may have been reused).
stop_fault_server() {
    local rc=0 p keep=()
    kill -TERM "$FAULT_PID"
    wait "$FAULT_PID" || rc=$?
    for p in "${SERVER_PIDS[@]}"; do
        [[ $p == "$FAULT_PID" ]] || keep+=("$p")
    done
    SERVER_PIDS=("${keep[@]}")
    if ((rc != 0)) || [[ ! -s $FAULT_STATS ]]; then
        log "fault_server.py exited $rc without its counts"
        cat "$WORK/server.err" >&2
        exit 1
    fi
}

# check_run NAME EXPECTED_421: the last send's JSON summary and the server's counts; appends
# "slowdowns lowest_per_s campaign_seconds connections rcpt_421" to $WORK/NAME.extra.
check_run() {
    python3 - "$WORK/$1.stdout" "$FAULT_STATS" "$COUNT" "$2" >>"$WORK/$1.extra" <<'PY' || exit 1
import json, sys
summary, stats, count, want_421 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = json.load(open(summary))
v = json.load(open(stats))
problems = []
if s["session"]["sent"] != count:
    problems.append(f"campaign sent {s['session']['sent']}, expected {count}")
if s["session"]["deferred"] or s["session"]["failed"] or s["session"]["unknown"]:
    problems.append(f"campaign left {s['session']}")
if s["stop"] != {"kind": "finished"} and s["stop"] != "finished":
    problems.append(f"campaign stopped: {s['stop']}")
if v["accepted"] != count:
    problems.append(f"the server accepted {v['accepted']}, expected {count}")
if v["duplicates"]:
    problems.append(f"donors accepted more than once: {v['duplicates']}")
if v["missing"]:
    problems.append(f"{len(v['missing'])} donors never accepted, e.g. {v['missing'][:3]}")
if v["unexpected"]:
    problems.append(f"recipients not in the export: {v['unexpected']}")
if v["rcpt_421"] != want_421 or v["throttled_seen"] != want_421:
    problems.append(f"the server sent {v['rcpt_421']} 421s ({v['throttled_seen']} donors), expected {want_421}")
if problems:
    sys.exit("check failed: " + "; ".join(problems))
p = s.get("pacing", {})
low = p.get("lowest_per_second")
print(p.get("slowdowns", 0), "-" if low is None else f"{low:.0f}", f"{s['seconds']:.3f}",
      v["connections"], v["rcpt_421"])
PY
}

# run_send NAME EVERY [SEND FLAGS...]: one timed send against a fresh server and run copy.
run_send() {
    local name=$1 every=$2 want=0
    shift 2
    if ((every > 0)); then want=$THROTTLED; fi
    start_fault_server "$every"
    rm -rf "$WORK/run"
    cp -r "$WORK/template-run" "$WORK/run"
    export CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$FAULT_PORT"
    measure "$name" "$CAMPAIGN" send "$WORK/run" --concurrency "$CONCURRENCY" "$@" --json --quiet
    stop_fault_server
    check_run "$name" "$want"
    rm -rf "$WORK/run"
}

ensure_time
ensure_venv aiosmtpd aiosmtpd
build

donors=$(exact_donors "$COUNT")
segment_run "$donors" "$SEND_TOML" "$WORK/template-run"

machine_header "campaign send fault benchmark (throttling vs healthy)"
echo "# bench/fault_server.py (aiosmtpd $("$AIOSMTPD_VENV/bin/python" -c 'import aiosmtpd; print(aiosmtpd.__version__)'), Python $("$AIOSMTPD_VENV/bin/python" -c 'import platform; print(platform.python_version())')) on 127.0.0.1, a fresh one per send; $COUNT donors per run"
echo "# throttled: the first RCPT of every ${THROTTLE_EVERY}th donor ($THROTTLED of $COUNT) gets '421 4.7.0 Try again later, closing connection'"
echo "# campaign send RUN --concurrency $CONCURRENCY --retry-delay $RETRY_DELAY --json --quiet; runs per server: $RUNS (medians), alternating which goes first"

for ((i = 1; i <= RUNS; i++)); do
    log "run $i/$RUNS"
    if ((i % 2)); then
        run_send healthy 0 --retry-delay "$RETRY_DELAY"
        run_send throttled "$THROTTLE_EVERY" --retry-delay "$RETRY_DELAY"
    else
        run_send throttled "$THROTTLE_EVERY" --retry-delay "$RETRY_DELAY"
        run_send healthy 0 --retry-delay "$RETRY_DELAY"
    fi
done
if [[ $DEFAULT_DELAY_RUN == 1 ]]; then
    log "one throttled run with the default retry delay (expect 30-45 s)"
    run_send throttled-default "$THROTTLE_EVERY"
fi

echo
echo "| server | retry delay | median wall s | msg/s | median peak RSS MB | median user+sys s |"
echo "|---|---:|---:|---:|---:|---:|"
cpu_median() { # NAME: median of user + sys CPU seconds
    awk '{ print $3 + $4 }' "$WORK/$1" >"$WORK/$1.cpu"
    median "$WORK/$1.cpu" 1
}
row() { # NAME LABEL DELAY
    awk -v w="$(median "$WORK/$1" 1)" -v r="$(median "$WORK/$1" 2)" -v c="$(cpu_median "$1")" \
        -v n="$COUNT" -v t="$2" -v d="$3" \
        'BEGIN { printf "| %s | %s | %.3f | %.0f | %.1f | %.2f |\n", t, d, w, n / w, r / 1024, c }'
}
row healthy "healthy" "${RETRY_DELAY} s"
row throttled "throttling ($THROTTLED × 421)" "${RETRY_DELAY} s"
if [[ $DEFAULT_DELAY_RUN == 1 ]]; then
    row throttled-default "throttling ($THROTTLED × 421), 1 run" "default (30 s)"
fi

healthy=$(median "$WORK/healthy" 1)
throttled=$(median "$WORK/throttled" 1)
ratio=$(awk -v t="$throttled" -v h="$healthy" 'BEGIN { printf "%.2f", t / h }')
verdict=$(awk -v r="$ratio" 'BEGIN { print (r <= 3) ? "met" : "missed" }')
echo
echo "- throttled/healthy wall = $ratio (target <= 3: $verdict), retry delay $RETRY_DELAY s; median wall s: healthy $healthy, throttled $throttled"
echo "- raw wall s: healthy $(raw "$WORK/healthy" 1); throttled $(raw "$WORK/throttled" 1)"
echo "- peak RSS KB: healthy $(raw "$WORK/healthy" 2); throttled $(raw "$WORK/throttled" 2)"
echo "- throttled runs (campaign's JSON and the server): rate halvings $(raw "$WORK/throttled.extra" 1); lowest rate msg/s $(raw "$WORK/throttled.extra" 2); campaign's own seconds $(raw "$WORK/throttled.extra" 3); connections opened $(raw "$WORK/throttled.extra" 4); 421s sent $(raw "$WORK/throttled.extra" 5)"
echo "- healthy runs: connections opened $(raw "$WORK/healthy.extra" 4); campaign's own seconds $(raw "$WORK/healthy.extra" 3)"
if [[ $DEFAULT_DELAY_RUN == 1 ]]; then
    d=$(median "$WORK/throttled-default" 1)
    echo "- default retry delay (30 s), one throttled run: wall $d s = $(awk -v t="$d" -v h="$healthy" 'BEGIN { printf "%.1f", t / h }')x the healthy median; rate halvings $(raw "$WORK/throttled-default.extra" 1), lowest rate msg/s $(raw "$WORK/throttled-default.extra" 2), connections opened $(raw "$WORK/throttled-default.extra" 4)"
fi
