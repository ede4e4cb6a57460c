#!/usr/bin/env bash
# The ledger's size after a completed send, in bytes per donor, and the time `campaign status`
# takes to read that run, for campaign and a baseline binary (e.g. one built before a ledger
# format change) sending the same run to one smtp-sink on loopback. See BENCHMARKS.md,
# section "Ledger size".
#
#   CAMPAIGN_BASELINE=/tmp/old/campaign bench/ledger.sh
#   COUNT=1000000 STATUS_RUNS=5 CAMPAIGN_BASELINE=/tmp/old/campaign bench/ledger.sh
#
# Environment:
#   COUNT              donors sent (default 100000)
#   CONNECTIONS        send --concurrency (default 8)
#   STATUS_RUNS        timed `status` runs per binary, alternating which goes first (default 5)
#   CAMPAIGN_BASELINE  the binary to compare with (required)
#   CAMPAIGN_BIN / CAMPAIGN_GEN as in bench/lib.sh
#
# Each binary sends its own fresh copy of one segmented run (bench/send-campaign.toml), then
# `status` of each finished run is timed; the ledger size is the sum of RUN/ledger/**/*.log.
# Only 127.0.0.1 is contacted; the sink and every run directory are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

COUNT=${COUNT:-100000}
CONNECTIONS=${CONNECTIONS:-8}
STATUS_RUNS=${STATUS_RUNS:-5}
if [[ -z ${CAMPAIGN_BASELINE:-} ]]; then
    echo "set CAMPAIGN_BASELINE to the campaign binary to compare with" >&2
    exit 2
fi

ensure_time
ensure_postfix
build
BASELINE=$(given_binary CAMPAIGN_BASELINE "$CAMPAIGN_BASELINE")

donors=$(exact_donors "$COUNT")
segment_run "$donors" bench/send-campaign.toml "$WORK/template-run"
start_sink
export CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT"

ledger_bytes() { # RUN: bytes of its chunk ledgers
    find "$1/ledger" -name '*.log' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}
export_bytes=$(stat -c %s "$donors")

machine_header "campaign ledger size"
echo "# smtp-sink on 127.0.0.1:$SINK_PORT; $COUNT donors ($export_bytes bytes of export); send --concurrency $CONNECTIONS"
echo "# baseline: CAMPAIGN_BASELINE=$BASELINE, sha256 $(bin_fingerprint "$BASELINE")"
echo
echo "| binary | ledger bytes | bytes/donor | status median s (raw) |"
echo "|---|---:|---:|---|"
declare -A bytes
for who in campaign baseline; do
    bin=$CAMPAIGN
    [[ $who == baseline ]] && bin=$BASELINE
    cp -r "$WORK/template-run" "$WORK/run-$who"
    log "$who: sending $COUNT"
    measure "send-$who" "$bin" send "$WORK/run-$who" --concurrency "$CONNECTIONS" --json --quiet
    sent=$(sent_count "send-$who")
    if [[ $sent != "$COUNT" ]]; then
        log "$who sent $sent messages, expected $COUNT"
        exit 1
    fi
    bytes[$who]=$(ledger_bytes "$WORK/run-$who")
done
for ((i = 0; i < STATUS_RUNS; i++)); do
    order=(campaign baseline)
    ((i % 2)) && order=(baseline campaign)
    for who in "${order[@]}"; do
        bin=$CAMPAIGN
        [[ $who == baseline ]] && bin=$BASELINE
        # status exits 0 for a complete run; anything else is a failure here.
        measure "status-$who" "$bin" status "$WORK/run-$who"
    done
done
for who in campaign baseline; do
    printf '| %s | %d | %.1f | %s (%s) |\n' "$who" "${bytes[$who]}" \
        "$(awk -v b="${bytes[$who]}" -v n="$COUNT" 'BEGIN { print b / n }')" \
        "$(median "$WORK/status-$who" 1)" "$(raw "$WORK/status-$who" 1)"
done
echo
awk -v a="${bytes[campaign]}" -v b="${bytes[baseline]}" -v n="$COUNT" 'BEGIN {
    printf "campaign/baseline ledger size: %.3f (%.1f vs %.1f bytes per donor; export %.1f)\n", a / b, a / n, b / n, '"$export_bytes"' / n }'
awk -v a="$(median "$WORK/status-campaign" 1)" -v b="$(median "$WORK/status-baseline" 1)" 'BEGIN {
    printf "campaign/baseline status time: %.3f\n", a / b }'
