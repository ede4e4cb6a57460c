#!/usr/bin/env bash
# Memory at scale: peak RSS of `campaign segment` at 100k, 1M (and optionally 10M) rows, and of
# `campaign send` (to a loopback smtp-sink, 8 connections) at 100k and 1M rows' worth of
# donors. See BENCHMARKS.md, section "Scale".
#
#   bench/scale.sh                       # segment 100k + 1M, send 100k + 1M, 3 runs each (~10 min)
#   WITH_10M=1 bench/scale.sh            # also segment 10M rows (1 GB file, ~2.2 GB disk)
#   RUNS=1 SEND_ROWS=100000 bench/scale.sh
#
# Environment:
#   SEGMENT_ROWS  space-separated row counts for segment (default "100000 1000000", plus
#                 10000000 when WITH_10M=1)
#   SEND_ROWS     space-separated row counts for send (default "100000 1000000")
#   RUNS          runs per cell (default 3; medians)
#   SEED          generator seed (default 20261129; same files as bench/segment.sh)
#
# Segment uses bench/campaign.toml (as bench/segment.sh does); its RSS is reported per distinct
# donor (rows minus rejected minus duplicates: the dedupe set holds one key per distinct
# address), both whole and beyond the fixed footprint measured on a 100-row file. Send uses
# bench/send-campaign.toml (a catch-all, so every valid distinct row is a donor). About 0.7% of
# the donors have non-ASCII addresses; smtp-sink does not offer SMTPUTF8, so campaign records
# them as failed without sending (column "failed"). The run is segmented once per
# size and copied fresh for every send so every ledger starts empty. The send RSS ratio
# 1M/100k is the scaling figure (target: within 2x).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

DEFAULT_SEGMENT_ROWS="100000 1000000"
[[ ${WITH_10M:-0} == 1 ]] && DEFAULT_SEGMENT_ROWS+=" 10000000"
SEGMENT_ROWS=${SEGMENT_ROWS:-$DEFAULT_SEGMENT_ROWS}
SEND_ROWS=${SEND_ROWS:-100000 1000000}
RUNS=${RUNS:-3}
SEGMENT_TOML=bench/campaign.toml
SEND_TOML=bench/send-campaign.toml
TINY_ROWS=100

ensure_time
ensure_postfix
build

manifest() { # RUN PYTHON-EXPRESSION over m (the manifest)
    python3 -c "import json,sys; m = json.load(open(sys.argv[1])); print($2)" "$1/manifest.json"
}
run_segment() { # FILE NAME
    rm -rf "$WORK/seg"
    measure "$2" "$CAMPAIGN" segment "$1" --campaign "$SEGMENT_TOML" --out "$WORK/seg" \
        --as-of "$AS_OF" --quiet --force
}

machine_header "campaign memory-at-scale benchmark"
echo "# runs per cell: $RUNS (medians)"

# --- segment ------------------------------------------------------------------------------
ensure_data "$TINY_ROWS"
for ((i = 1; i <= RUNS; i++)); do run_segment "$(data_file "$TINY_ROWS")" seg-tiny; done
tiny_kb=$(median "$WORK/seg-tiny" 2)
echo "# segment peak RSS on $TINY_ROWS rows (fixed footprint): $tiny_kb KB"
echo
echo "| segment rows | distinct donors | median wall s | median peak RSS MB | RSS / distinct donor | (RSS - RSS@$TINY_ROWS) / distinct donor |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in $SEGMENT_ROWS; do
    ensure_data "$n"
    f=$(data_file "$n")
    for ((i = 1; i <= RUNS; i++)); do
        log "segment $(label "$n") run $i/$RUNS"
        run_segment "$f" "seg-$n"
    done
    # Distinct addresses among valid rows: everything but rejected rows and later duplicates.
    distinct=$(manifest "$WORK/seg" 'm["input"]["data_rows"] - m["dropped"]["rejected"] - m["dropped"]["duplicate"]')
    rm -rf "$WORK/seg"
    awk -v n="$n" -v d="$distinct" -v w="$(median "$WORK/seg-$n" 1)" -v r="$(median "$WORK/seg-$n" 2)" -v t="$tiny_kb" \
        'BEGIN { printf "| %d | %d | %.2f | %.1f | %.1f B | %.1f B |\n", n, d, w, r / 1024, r * 1024 / d, (r - t) * 1024 / d }'
done

# --- send ---------------------------------------------------------------------------------
start_sink
export CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT"
echo
echo "| send rows | donors | sent | failed (no SMTPUTF8) | median wall s | sent msg/s | median peak RSS MB |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
declare -A send_rss
for n in $SEND_ROWS; do
    ensure_data "$n"
    segment_run "$(data_file "$n")" "$SEND_TOML" "$WORK/send-template"
    donors=$(manifest "$WORK/send-template" 'sum(s["rows"] for s in m["segments"])')
    for ((i = 1; i <= RUNS; i++)); do
        log "send $(label "$n") run $i/$RUNS"
        rm -rf "$WORK/run"
        cp -r "$WORK/send-template" "$WORK/run"
        measure "send-$n" "$CAMPAIGN" send "$WORK/run" --concurrency 8 --json --quiet
        sent=$(sent_count "send-$n")
        failed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["session"]["failed"])' "$WORK/send-$n.stdout")
        rm -rf "$WORK/run"
    done
    rm -rf "$WORK/send-template"
    send_rss[$n]=$(median "$WORK/send-$n" 2)
    awk -v n="$n" -v d="$donors" -v s="$sent" -v f="$failed" -v w="$(median "$WORK/send-$n" 1)" -v r="${send_rss[$n]}" \
        'BEGIN { printf "| %d | %d | %d | %d | %.2f | %.0f | %.1f |\n", n, d, s, f, w, s / w, r / 1024 }'
done
echo
for n in $SEGMENT_ROWS; do
    echo "- segment $(label "$n"): raw wall s $(raw "$WORK/seg-$n" 1); peak RSS KB $(raw "$WORK/seg-$n" 2)"
done
for n in $SEND_ROWS; do
    echo "- send $(label "$n"): raw wall s $(raw "$WORK/send-$n" 1); peak RSS KB $(raw "$WORK/send-$n" 2)"
done
if [[ -n ${send_rss[100000]:-} && -n ${send_rss[1000000]:-} ]]; then
    awk -v a="${send_rss[1000000]}" -v b="${send_rss[100000]}" \
        'BEGIN { printf "- send peak RSS 1M/100k = %.2f (target <= 2)\n", a / b }'
fi
