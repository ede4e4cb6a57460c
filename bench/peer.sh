#!/usr/bin/env bash
# Benchmark `campaign send` (default settings) against a peer tool, Python's `mailmerge` CLI,
# sending the same donors to one `smtp-sink` on a loopback port (it discards every message).
# See BENCHMARKS.md, section "Peer: mailmerge".
#
#   bench/peer.sh                    # 1000 donors, 3 runs each
#   RUNS=5 COUNT=2000 bench/peer.sh
#
# Environment:
#   COUNT  donors (messages) per run (default 1000)
#   RUNS   timed runs per tool (default 3); tools interleaved run by run
#   SEED   generator seed (default 20261129)
#   SMALL_CHUNK  --chunk-size of the third row's run (default 100)
#
# mailmerge 2.x is installed into a venv under bench-data/ if missing. It gets
# bench/mailmerge/template.txt (the bench/send-campaign.toml message written by hand:
# multipart text + HTML with List-Unsubscribe, about 4.6 KB as mailmerge encodes it), the same
# COUNT-row donor CSV that `campaign segment` turns into the run, and a server config with
# host 127.0.0.1, the sink's port and no security. It is run with --no-dry-run --no-limit and
# opens one connection per message (that is how it works). `campaign send RUN --json --quiet`
# uses its defaults (8 connections), on a fresh copy of the run each time. A worker owns one
# chunk file at a time, so a run segmented with the default --chunk-size 1000 has only 3
# chunks for 1000 donors (one per segment) and uses at most 3 connections; a third row sends
# the same donors from a run segmented with --chunk-size SMALL_CHUNK (default 100), still with
# send's defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

COUNT=${COUNT:-1000}
RUNS=${RUNS:-3}
SMALL_CHUNK=${SMALL_CHUNK:-100}
SEND_TOML=bench/send-campaign.toml
MM_TEMPLATE=bench/mailmerge/template.txt

ensure_time
ensure_postfix
ensure_mailmerge
build

donors=$(exact_donors "$COUNT")
segment_run "$donors" "$SEND_TOML" "$WORK/template-run"
segment_run "$donors" "$SEND_TOML" "$WORK/template-run-small" --chunk-size "$SMALL_CHUNK"
chunks=$(find "$WORK/template-run/segments" -name '*.csv' | wc -l)
chunks_small=$(find "$WORK/template-run-small/segments" -name '*.csv' | wc -l)

start_sink
export CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT"
# No `security` key: mailmerge's "no security" (plain SMTP, no login).
printf '[smtp_server]\nhost = 127.0.0.1\nport = %s\n' "$SINK_PORT" >"$WORK/mailmerge_server.conf"

run_mailmerge() {
    measure mailmerge "$MAILMERGE_VENV/bin/mailmerge" --no-dry-run --no-limit \
        --template "$MM_TEMPLATE" --database "$donors" --config "$WORK/mailmerge_server.conf" \
        --output-format raw
    local sent
    sent=$(grep -c '^>>> message [0-9]* sent$' "$WORK/mailmerge.stdout" || true)
    if [[ $sent != "$COUNT" ]]; then
        log "mailmerge sent $sent messages, expected $COUNT"
        exit 1
    fi
}
run_campaign() { # TEMPLATE_RUN NAME
    rm -rf "$WORK/run"
    cp -r "$1" "$WORK/run"
    measure "$2" "$CAMPAIGN" send "$WORK/run" --json --quiet
    local sent
    sent=$(sent_count "$2")
    if [[ $sent != "$COUNT" ]]; then
        log "campaign sent $sent messages, expected $COUNT"
        exit 1
    fi
    rm -rf "$WORK/run"
}

mm_version=$("$MAILMERGE_VENV/bin/mailmerge" --version | awk '{ print $NF }')
machine_header "campaign send vs mailmerge benchmark"
echo "# smtp-sink on 127.0.0.1:$SINK_PORT; $COUNT messages per run; mailmerge $mm_version, $("$MAILMERGE_VENV/bin/python" --version)"
echo "# runs per cell: $RUNS (medians); tools interleaved run by run"
echo
for ((i = 1; i <= RUNS; i++)); do
    log "run $i/$RUNS"
    run_mailmerge
    run_campaign "$WORK/template-run" campaign
    run_campaign "$WORK/template-run-small" campaign-small
done
echo "| tool | median wall s | msg/s | median peak RSS MB |"
echo "|---|---:|---:|---:|"
for tool in mailmerge campaign campaign-small; do
    name=$tool
    [[ $tool == mailmerge ]] && name="mailmerge --no-dry-run --no-limit (1 connection per message)"
    [[ $tool == campaign ]] && name="campaign send (defaults: 8 connections; run of $chunks chunks, --chunk-size 1000)"
    [[ $tool == campaign-small ]] && name="campaign send (defaults: 8 connections; run of $chunks_small chunks, --chunk-size $SMALL_CHUNK)"
    awk -v t="$name" -v w="$(median "$WORK/$tool" 1)" -v r="$(median "$WORK/$tool" 2)" -v n="$COUNT" \
        'BEGIN { printf "| %s | %.3f | %.0f | %.1f |\n", t, w, n / w, r / 1024 }'
done
ratio=$(awk -v a="$(median "$WORK/mailmerge" 1)" -v b="$(median "$WORK/campaign" 1)" 'BEGIN { printf "%.1f", a / b }')
ratio_small=$(awk -v a="$(median "$WORK/mailmerge" 1)" -v b="$(median "$WORK/campaign-small" 1)" 'BEGIN { printf "%.1f", a / b }')
echo
echo "- campaign/mailmerge msg/s = ${ratio}x (target >= 20x) on the default run; ${ratio_small}x with --chunk-size $SMALL_CHUNK"
echo "- raw wall s: campaign $(raw "$WORK/campaign" 1); campaign, --chunk-size $SMALL_CHUNK: $(raw "$WORK/campaign-small" 1); mailmerge $(raw "$WORK/mailmerge" 1)"
