#!/usr/bin/env bash
# Benchmark `campaign send` against postfix's `smtp-source` load generator, both delivering to
# one `smtp-sink` on a loopback port (it discards every message). See BENCHMARKS.md, section
# "Send".
#
#   bench/send.sh                          # 20000 messages, 8 and 1 connections, 3 runs each
#   RUNS=5 CONNECTIONS="8" bench/send.sh
#
# Environment:
#   COUNT        messages per run (default 20000)
#   CONNECTIONS  space-separated connection counts (default "8 1")
#   RUNS         timed runs per client and connection count (default 3); clients interleaved
#   SEED         generator seed (default 20261129)
#
# The donors are the first COUNT deliverable rows of a generated export (bench/lib.sh,
# exact_donors), so every donor is exactly one message. Messages come from
# bench/send-campaign.toml (templates in bench/send-templates/, about 4.4 KB rendered); the
# rendered size of real messages is measured with `send --dry-run --print` and given to
# smtp-source as its message length. The run is segmented once and copied fresh for every
# campaign run, so every ledger starts empty. Only 127.0.0.1 is ever contacted; the sink is
# killed and every run directory removed when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

COUNT=${COUNT:-20000}
CONNECTIONS=${CONNECTIONS:-8 1}
RUNS=${RUNS:-3}
SEND_TOML=bench/send-campaign.toml

ensure_time
ensure_postfix
build

donors=$(exact_donors "$COUNT")
segment_run "$donors" "$SEND_TOML" "$WORK/template-run"

# Rendered size: the mean over the first donor of every segment.
sizes=()
for chunk in "$WORK"/template-run/segments/*/00001.csv; do
    email=$(python3 -c 'import csv,sys; r = csv.DictReader(open(sys.argv[1], newline="")); print(next(r)["email"])' "$chunk")
    sizes+=("$("$CAMPAIGN" send "$WORK/template-run" --dry-run --print "$email" | wc -c)")
done
SIZE=$(printf '%s\n' "${sizes[@]}" | awk '{ s += $1 } END { printf "%d", s / NR }')
if [[ -e $WORK/template-run/ledger ]]; then
    log "--print created a ledger; the template run is not fresh"
    exit 1
fi

start_sink
export CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT"

run_source() { # CONNECTIONS NAME
    measure "$2" "$SMTP_SOURCE" -d -s "$1" -m "$COUNT" -l "$SIZE" \
        -f from@example.org -t to@example.org "127.0.0.1:$SINK_PORT"
}
run_campaign() { # CONNECTIONS NAME
    rm -rf "$WORK/run"
    cp -r "$WORK/template-run" "$WORK/run"
    measure "$2" "$CAMPAIGN" send "$WORK/run" --concurrency "$1" --json --quiet
    local sent
    sent=$(sent_count "$2")
    if [[ $sent != "$COUNT" ]]; then
        log "campaign sent $sent messages, expected $COUNT"
        exit 1
    fi
    rm -rf "$WORK/run"
}

machine_header "campaign send benchmark"
echo "# smtp-sink on 127.0.0.1:$SINK_PORT; $COUNT messages per run; campaign message sizes ${sizes[*]} bytes (mean $SIZE, given to smtp-source -l)"
echo "# runs per cell: $RUNS (medians); clients interleaved run by run"
echo
echo "| connections | client | median wall s | msg/s | median peak RSS MB |"
echo "|---:|---|---:|---:|---:|"
summary=()
for c in $CONNECTIONS; do
    for ((i = 1; i <= RUNS; i++)); do
        log "$c connections, run $i/$RUNS"
        # Alternate which client goes first, so neither always meets the sink just after
        # the other's load.
        if ((i % 2)); then
            run_source "$c" "source-$c"
            run_campaign "$c" "campaign-$c"
        else
            run_campaign "$c" "campaign-$c"
            run_source "$c" "source-$c"
        fi
    done
    for tool in source campaign; do
        wall=$(median "$WORK/$tool-$c" 1)
        rss=$(median "$WORK/$tool-$c" 2)
        name=$tool
        [[ $tool == source ]] && name="smtp-source -d -s $c"
        [[ $tool == campaign ]] && name="campaign send --concurrency $c"
        awk -v c="$c" -v t="$name" -v w="$wall" -v r="$rss" -v n="$COUNT" \
            'BEGIN { printf "| %d | %s | %.3f | %.0f | %.1f |\n", c, t, w, n / w, r / 1024 }'
    done
    target=0.8
    ((c == 1)) && target=0.6
    ratio=$(awk -v s="$(median "$WORK/source-$c" 1)" -v m="$(median "$WORK/campaign-$c" 1)" 'BEGIN { printf "%.2f", s / m }')
    summary+=("$c connection(s): campaign/smtp-source msg/s = $ratio (target >= $target); raw wall s: campaign $(raw "$WORK/campaign-$c" 1), smtp-source $(raw "$WORK/source-$c" 1); campaign peak RSS KB $(raw "$WORK/campaign-$c" 2)")
done
echo
for s in "${summary[@]}"; do echo "- $s"; done
