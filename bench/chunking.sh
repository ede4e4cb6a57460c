#!/usr/bin/env bash
# Benchmark `campaign send` with and without CHUNKING (BDAT, RFC 3030) against a real postfix
# `smtpd`, with postfix's `smtp-source` against the same smtpd as the named baseline; then the
# same three through a TCP proxy that delays each direction (bench/delay_proxy.py), per
# connection, against the floor of 1/(round trips x RTT). See BENCHMARKS.md, section
# "CHUNKING".
#
#   bench/chunking.sh                        # loopback: 20000 messages, 8 and 1 connections;
#                                            # then 1000 messages through a 5 ms proxy
#   RUNS=5 CONNECTIONS=8 LATENCY_COUNT=0 bench/chunking.sh   # loopback only
#
# Environment:
#   COUNT          messages per loopback run (default 20000)
#   CONNECTIONS    space-separated connection counts on loopback (default "8 1")
#   RUNS           timed runs per client and setting (default 3); clients take turns going
#                  first (run i starts at client i % 3)
#   LATENCY_MS     the proxy's delay in each direction (default 5: a 10 ms round trip)
#   LATENCY_COUNT  messages per run through the proxy, one connection (default 1000; 0 skips)
#   CAMPAIGN_BIN, CAMPAIGN_GEN, SEED  as in bench/send.sh
#
# Two throwaway postfix instances (tests/system/discard_postfix.sh, "drop" mode: every
# message accepted with 250 at its end and discarded by smtpd's DISCARD action, never queued;
# each instance on tmpfs; needs root): one offering CHUNKING, one with it hidden
# (smtpd_discard_ehlo_keywords = chunking). campaign sends by BDAT to the first, by pipelined
# DATA to the second; smtp-source (lock-step, HELO, no PIPELINING) sends to the first. Same
# donors, messages and fresh run copies as bench/send.sh. Only 127.0.0.1 is contacted; both
# instances, the proxies and every run directory are stopped or removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source tests/system/discard_postfix.sh

COUNT=${COUNT:-20000}
CONNECTIONS=${CONNECTIONS:-8 1}
RUNS=${RUNS:-3}
LATENCY_MS=${LATENCY_MS:-5}
LATENCY_COUNT=${LATENCY_COUNT:-1000}
SEND_TOML=bench/send-campaign.toml

if [[ $(id -u) != 0 ]]; then
    log "bench/chunking.sh runs postfix instances of its own: run it as root"
    exit 1
fi
ensure_time
ensure_postfix
build

PFX_TOP=$(mktemp -d /dev/shm/campaign-bench-postfix.XXXXXX)
chmod 755 "$PFX_TOP" # postfix's own user works in there
PROXY_PIDS=()
stop_everything() {
    local pid
    for pid in "${PROXY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PROXY_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    discard_postfix_stop "$PFX_TOP/chunking" || true
    discard_postfix_stop "$PFX_TOP/plain" || true
    rm -rf "$PFX_TOP"
    cleanup
}
trap stop_everything EXIT

for n in "$COUNT" "$LATENCY_COUNT"; do
    if ((n > 0)) && [[ ! -d $WORK/template-run-$n ]]; then
        segment_run "$(exact_donors "$n")" "$SEND_TOML" "$WORK/template-run-$n"
    fi
done
sizes=()
for chunk in "$WORK/template-run-$COUNT"/segments/*/00001.csv; do
    email=$(python3 -c 'import csv,sys; r = csv.DictReader(open(sys.argv[1], newline="")); print(next(r)["email"])' "$chunk")
    sizes+=("$("$CAMPAIGN" send "$WORK/template-run-$COUNT" --dry-run --print "$email" --raw 2>/dev/null | wc -c)")
done
SIZE=$(printf '%s\n' "${sizes[@]}" | awk '{ s += $1 } END { printf "%d", s / NR }')

discard_postfix_start "$PFX_TOP/chunking" drop on
PORT_BDAT=$PFX_PORT
discard_postfix_start "$PFX_TOP/plain" drop off
PORT_DATA=$PFX_PORT
# Which transfer each instance gets is checked, not assumed: by what smtpd counted.
smtpd_counts() { # DIR: totals of smtpd's per-session command counts in its log, "mail=N bdat=N data=N"
    python3 - "$1/maillog" <<'PY'
import collections, re, sys
used = collections.Counter()
for line in re.findall(r"disconnect from \S+ (.*)", open(sys.argv[1]).read()):
    for cmd, ok, total in re.findall(r"\b(\w+)=(\d+)(?:/(\d+))?", line):
        used[cmd] += int(total or ok)
print(" ".join(f"{k}={used[k]}" for k in ("mail", "bdat", "data")))
PY
}

# run_campaign CONNECTIONS NAME PORT [COUNT]: a fresh copy of the template run of COUNT
# donors (default $COUNT) sent to PORT.
run_campaign() {
    local n=${4:-$COUNT} sent
    rm -rf "$WORK/run"
    cp -r "$WORK/template-run-$n" "$WORK/run"
    CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$3" measure "$2" "$CAMPAIGN" send "$WORK/run" \
        --concurrency "$1" --json --quiet
    sent=$(sent_count "$2")
    if [[ $sent != "$n" ]]; then
        log "campaign sent $sent messages to port $3, expected $n"
        exit 1
    fi
    rm -rf "$WORK/run"
}
run_source() { # CONNECTIONS NAME PORT [COUNT]
    measure "$2" "$SMTP_SOURCE" -d -s "$1" -m "${4:-$COUNT}" -l "$SIZE" \
        -f from@example.org -t to@example.org "127.0.0.1:$3"
}
run_bdat() { run_campaign "$1" "$2" "$3" "${4:-}"; }
run_data() { run_campaign "$1" "$2" "$3" "${4:-}"; }

machine_header "campaign send with and without CHUNKING, against postfix smtpd"
echo "# postfix $(postconf -d -h mail_version) smtpd, DISCARD at end of data, queue on tmpfs: 127.0.0.1:$PORT_BDAT offers CHUNKING, 127.0.0.1:$PORT_DATA does not"
echo "# $COUNT messages per loopback run; campaign message sizes ${sizes[*]} bytes (mean $SIZE, given to smtp-source -l); runs per cell: $RUNS (medians), clients rotated run by run"

# table SUFFIX N (below): the three clients' rows for one setting.
clients=(source bdat data)
table() { # SUFFIX N: prints the table rows for the result files NAME-SUFFIX, N messages each
    local suffix=$1 n=$2 tool name
    for tool in "${clients[@]}"; do
        case $tool in
            source) name="smtp-source -d (lock-step), to the CHUNKING smtpd" ;;
            bdat) name="campaign send, CHUNKING offered (BDAT)" ;;
            data) name="campaign send, CHUNKING hidden (PIPELINING + DATA)" ;;
        esac
        awk -v t="$name" -v w="$(median "$WORK/$tool-$suffix" 1)" -v r="$(median "$WORK/$tool-$suffix" 2)" -v n="$n" -v s="$suffix" \
            'BEGIN { printf "| %s | %s | %.3f | %.1f | %.1f |\n", s, t, w, n / w, r / 1024 }'
    done
}
ratio() { awk -v a="$(median "$WORK/$1" 1)" -v b="$(median "$WORK/$2" 1)" 'BEGIN { printf "%.2f", b / a }'; } # NAME_A NAME_B: msg/s of A over B

summary=()
rows=()
for c in $CONNECTIONS; do
    for ((i = 1; i <= RUNS; i++)); do
        log "loopback, $c connection(s), run $i/$RUNS"
        for ((k = 0; k < 3; k++)); do
            tool=${clients[(i + k) % 3]}
            case $tool in
                source) run_source "$c" "source-$c" "$PORT_BDAT" ;;
                bdat) run_bdat "$c" "bdat-$c" "$PORT_BDAT" ;;
                data) run_data "$c" "data-$c" "$PORT_DATA" ;;
            esac
        done
    done
    rows+=("$(table "$c" "$COUNT")")
    summary+=("loopback, $c connection(s): BDAT/DATA msg/s = $(ratio "bdat-$c" "data-$c"), BDAT/smtp-source = $(ratio "bdat-$c" "source-$c"), DATA/smtp-source = $(ratio "data-$c" "source-$c"); raw wall s: BDAT $(raw "$WORK/bdat-$c" 1); DATA $(raw "$WORK/data-$c" 1); smtp-source $(raw "$WORK/source-$c" 1); campaign CPU (user+sys) per message µs, median: BDAT $(awk -v c="$(median "$WORK/bdat-$c" 5)" -v n="$COUNT" 'BEGIN { printf "%.0f", c * 1e6 / n }'), DATA $(awk -v c="$(median "$WORK/data-$c" 5)" -v n="$COUNT" 'BEGIN { printf "%.0f", c * 1e6 / n }')")
done
counts_bdat=$(smtpd_counts "$PFX_TOP/chunking")
counts_data=$(smtpd_counts "$PFX_TOP/plain")

# --- through the delaying proxy ---------------------------------------------------------------
rtt_rows=()
if ((LATENCY_COUNT > 0)); then
    start_proxy() { # TARGET_PORT: a delay proxy in front of it; sets PROXY_PORT
        PROXY_PORT=$(free_port)
        python3 bench/delay_proxy.py "$PROXY_PORT" "$1" "$LATENCY_MS" 2>"$WORK/proxy.err" &
        PROXY_PIDS+=($!)
        wait_listening "$PROXY_PORT" "$!" delay_proxy.py "$WORK/proxy.err"
    }
    start_proxy "$PORT_BDAT"
    PROXY_BDAT=$PROXY_PORT
    start_proxy "$PORT_DATA"
    PROXY_DATA=$PROXY_PORT
    # The round trip as measured: 200 NOOPs through the proxy, one at a time on four connections (smtpd's own
    # reply time included), and the same without it.
    rtt() { # PORT: median round trip in ms of NOOP -> 250
        python3 - "$1" <<'PY'
import socket, statistics, sys, time
# smtpd counts NOOP as a junk command and slows down after 100 on one connection.
times = []
for _ in range(4):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    def reply():
        while True:
            line = f.readline()
            if line[3:4] != b"-":
                return line
    reply()
    s.sendall(b"EHLO rtt.test\r\n"); reply()
    for _ in range(50):
        t = time.perf_counter(); s.sendall(b"NOOP\r\n"); reply(); times.append(time.perf_counter() - t)
    s.sendall(b"QUIT\r\n"); reply()
    s.close()
print(f"{statistics.median(times) * 1000:.3f}")
PY
    }
    RTT_PROXY=$(rtt "$PROXY_BDAT")
    RTT_DIRECT=$(rtt "$PORT_BDAT")
    log "round trip: ${RTT_PROXY} ms through the proxy, ${RTT_DIRECT} ms without"
    for ((i = 1; i <= RUNS; i++)); do
        log "through the ${LATENCY_MS} ms proxy, 1 connection, run $i/$RUNS"
        for ((k = 0; k < 3; k++)); do
            tool=${clients[(i + k) % 3]}
            case $tool in
                source) run_source 1 source-rtt "$PROXY_BDAT" "$LATENCY_COUNT" ;;
                bdat) run_bdat 1 bdat-rtt "$PROXY_BDAT" "$LATENCY_COUNT" ;;
                data) run_data 1 data-rtt "$PROXY_DATA" "$LATENCY_COUNT" ;;
            esac
        done
    done
    rows+=("$(table rtt "$LATENCY_COUNT")")
    nominal=$(awk -v d="$LATENCY_MS" 'BEGIN { print 2 * d }')
    for tool in bdat data source; do
        case $tool in
            bdat) trips=1 ;;
            # One round trip per message, and one more per batch of 32 whose first message
            # has nobody's body to carry its commands ahead.
            data) trips=1.03125 ;;
            source) trips=4 ;;
        esac
        rtt_rows+=("$(awk -v t="$tool" -v w="$(median "$WORK/$tool-rtt" 1)" -v n="$LATENCY_COUNT" -v k="$trips" -v nom="$nominal" -v m="$RTT_PROXY" \
            'BEGIN { r = n / w; f = 1000 / (k * nom); g = 1000 / (k * m);
                     printf "| %s | %g | %.1f | %.1f | %.0f%% | %.1f | %.0f%% |", t, k, r, f, 100 * r / f, g, 100 * r / g }')")
    done
    summary+=("through the proxy (${LATENCY_MS} ms each way, measured round trip ${RTT_PROXY} ms, ${RTT_DIRECT} ms without the proxy), 1 connection, $LATENCY_COUNT messages: BDAT/DATA msg/s = $(ratio bdat-rtt data-rtt), BDAT/smtp-source = $(ratio bdat-rtt source-rtt); raw wall s: BDAT $(raw "$WORK/bdat-rtt" 1); DATA $(raw "$WORK/data-rtt" 1); smtp-source $(raw "$WORK/source-rtt" 1)")
fi

echo
echo "| connections | client | median wall s | msg/s | median peak RSS MB |"
echo "|---|---|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
if ((${#rtt_rows[@]})); then
    echo
    echo "Through the proxy, 1 connection: msg/s against the floor 1/(round trips x RTT), nominal RTT $nominal ms and measured $RTT_PROXY ms (target >= 90% of the floor):"
    echo
    echo "| client | round trips per message | msg/s | floor at ${nominal} ms | share | floor at ${RTT_PROXY} ms | share |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rtt_rows[@]}"
fi
echo
for s in "${summary[@]}"; do echo "- $s"; done
echo "- smtpd's command counts after the loopback runs: CHUNKING instance $counts_bdat; the other $counts_data"
