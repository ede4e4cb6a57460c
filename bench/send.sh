#!/usr/bin/env bash
# Benchmark `campaign send` against postfix's `smtp-source` load generator, both delivering to
# one `smtp-sink` on a loopback port (it discards every message). See BENCHMARKS.md, section
# "Send".
#
#   bench/send.sh                          # 20000 messages, 8 and 1 connections, 3 runs each
#   RUNS=5 CONNECTIONS="8" bench/send.sh
#   CAMPAIGN_BIN=/tmp/new/campaign CAMPAIGN_BASELINE=/tmp/old/campaign bench/send.sh  # before/after
#
# Environment:
#   COUNT        messages per run (default 20000)
#   CONNECTIONS  space-separated connection counts (default "8 1")
#   RUNS         timed runs per client and connection count (default 3); clients interleaved
#   SEED         generator seed (default 20261129)
#   SEND_TOML    the campaign file (default bench/send-campaign.toml, ~4.4 KB messages);
#                SEND_TOML=fixtures/campaign.toml sends the fixtures' own ~10 KB text + HTML
#                messages (not with DKIM, whose rewrite assumes the bench templates)
#   DKIM         off (default), rsa (RSA-2048) or ed25519: sign every message with a key made
#                by openssl for this run (mode 600, in the work dir, removed on exit)
#   CAMPAIGN_BIN       campaign binary to benchmark instead of building one from this checkout
#                      (cargo then builds only the gen_donors example, unless CAMPAIGN_GEN is set)
#   CAMPAIGN_GEN       gen_donors binary to use instead of building the example
#   CAMPAIGN_BASELINE  a second campaign binary (e.g. built before a change): every timed run
#                      also runs it exactly like campaign (fresh copy of the same template run,
#                      same flags, same sent-count check) as a third client, "campaign
#                      (baseline)"; the three take turns going first (run i starts at client
#                      i % 3), and the table and summary add its medians and the ratio
#                      campaign/baseline (msg/s). Unset: two clients, as before.
#
# The donors are the first COUNT deliverable rows of a generated export (bench/lib.sh,
# exact_donors), so every donor is exactly one message. Messages come from
# bench/send-campaign.toml (templates in bench/send-templates/, about 4.4 KB rendered); the
# rendered size of real messages is measured with `send --dry-run --print --raw` and given to
# smtp-source as its message length. The run is segmented once and copied fresh for every
# campaign run, so every ledger starts empty. Only 127.0.0.1 is ever contacted; the sink is
# killed and every run directory removed when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

COUNT=${COUNT:-20000}
CONNECTIONS=${CONNECTIONS:-8 1}
RUNS=${RUNS:-3}
SEND_TOML=${SEND_TOML:-bench/send-campaign.toml}

ensure_time
ensure_postfix
build
BASELINE=
if [[ -n ${CAMPAIGN_BASELINE:-} ]]; then
    BASELINE=$(given_binary CAMPAIGN_BASELINE "$CAMPAIGN_BASELINE")
fi

case ${DKIM:-off} in
off) ;;
rsa | ed25519)
    if [[ $DKIM == rsa ]]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/dkim.pem" 2>/dev/null
    else
        openssl genpkey -algorithm ed25519 -out "$WORK/dkim.pem"
    fi
    chmod 600 "$WORK/dkim.pem"
    signed=$WORK/send-campaign.toml
    sed "s|^dir = \"send-templates\"|dir = \"$PWD/bench/send-templates\"|" "$SEND_TOML" >"$signed"
    printf '[[dkim]]\ndomain = "%s"\nselector = "bench"\nprivate_key_file = "%s"\n' \
        "$(sed -n 's/^from = .*@\([^>"]*\).*/\1/p' "$SEND_TOML" | head -1)" "$WORK/dkim.pem" >>"$signed"
    SEND_TOML=$signed
    ;;
*) echo "DKIM must be off, rsa or ed25519, not $DKIM" >&2; exit 2 ;;
esac
echo "DKIM: ${DKIM:-off}" >&2

donors=$(exact_donors "$COUNT" "$SEND_TOML")
segment_run "$donors" "$SEND_TOML" "$WORK/template-run"

# Rendered size: the mean over the first donor of every segment.
sizes=()
for chunk in "$WORK"/template-run/segments/*/00001.csv; do
    email=$(python3 -c 'import csv,sys; r = csv.DictReader(open(sys.argv[1], newline="")); print(next(r)["email"])' "$chunk")
    sizes+=("$("$CAMPAIGN" send "$WORK/template-run" --dry-run --print "$email" --raw | wc -c)")
done
SIZE=$(printf '%s\n' "${sizes[@]}" | awk '{ s += $1 } END { printf "%d", s / NR }')
if [[ -e $WORK/template-run/ledger ]]; then
    log "--print created a ledger; the template run is not fresh"
    exit 1
fi
# The baseline sends the same template run; record what it renders, for comparison.
baseline_sizes=()
if [[ -n $BASELINE ]]; then
    for chunk in "$WORK"/template-run/segments/*/00001.csv; do
        email=$(python3 -c 'import csv,sys; r = csv.DictReader(open(sys.argv[1], newline="")); print(next(r)["email"])' "$chunk")
        baseline_sizes+=("$({ "$BASELINE" send "$WORK/template-run" --dry-run --print "$email" --raw 2>/dev/null || "$BASELINE" send "$WORK/template-run" --dry-run --print "$email"; } | wc -c)")
    done
    if [[ -e $WORK/template-run/ledger ]]; then
        log "the baseline's --print created a ledger; the template run is not fresh"
        exit 1
    fi
fi

start_sink
export CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT"

run_source() { # CONNECTIONS NAME
    measure "$2" "$SMTP_SOURCE" -d -s "$1" -m "$COUNT" -l "$SIZE" \
        -f from@example.org -t to@example.org "127.0.0.1:$SINK_PORT"
}
run_campaign() { # CONNECTIONS NAME [BINARY (default $CAMPAIGN)]
    local bin=${3:-$CAMPAIGN}
    rm -rf "$WORK/run"
    cp -r "$WORK/template-run" "$WORK/run"
    measure "$2" "$bin" send "$WORK/run" --concurrency "$1" --json --quiet
    local sent
    sent=$(sent_count "$2")
    if [[ $sent != "$COUNT" ]]; then
        log "$bin sent $sent messages, expected $COUNT"
        exit 1
    fi
    rm -rf "$WORK/run"
}
run_baseline() { run_campaign "$1" "$2" "$BASELINE"; } # CONNECTIONS NAME

machine_header "campaign send benchmark"
echo "# smtp-sink on 127.0.0.1:$SINK_PORT; $COUNT messages per run; campaign message sizes ${sizes[*]} bytes (mean $SIZE, given to smtp-source -l)"
if [[ -n $BASELINE ]]; then
    echo "# baseline: CAMPAIGN_BASELINE=$BASELINE, sha256 $(bin_fingerprint "$BASELINE"); its message sizes ${baseline_sizes[*]} bytes"
    echo "# runs per cell: $RUNS (medians); clients interleaved run by run, run i starting at client i % 3 of (smtp-source, campaign, baseline)"
    echo
    echo "| connections | client | median wall s | msg/s | median peak RSS MB | campaign/baseline msg/s |"
    echo "|---:|---|---:|---:|---:|---:|"
    tools=(source campaign baseline)
else
    echo "# runs per cell: $RUNS (medians); clients interleaved run by run"
    echo
    echo "| connections | client | median wall s | msg/s | median peak RSS MB |"
    echo "|---:|---|---:|---:|---:|"
    tools=(source campaign)
fi
summary=()
for c in $CONNECTIONS; do
    for ((i = 1; i <= RUNS; i++)); do
        log "$c connections, run $i/$RUNS"
        if [[ -n $BASELINE ]]; then
            # Rotate which of the three goes first (and so which follows which), so none
            # always meets the sink just after the same other's load.
            for ((k = 0; k < 3; k++)); do
                tool=${tools[(i + k) % 3]}
                "run_$tool" "$c" "$tool-$c"
            done
        # Alternate which client goes first, so neither always meets the sink just after
        # the other's load.
        elif ((i % 2)); then
            run_source "$c" "source-$c"
            run_campaign "$c" "campaign-$c"
        else
            run_campaign "$c" "campaign-$c"
            run_source "$c" "source-$c"
        fi
    done
    vs_baseline=
    if [[ -n $BASELINE ]]; then
        vs_baseline=$(awk -v b="$(median "$WORK/baseline-$c" 1)" -v m="$(median "$WORK/campaign-$c" 1)" 'BEGIN { printf "%.2f", b / m }')
    fi
    for tool in "${tools[@]}"; do
        wall=$(median "$WORK/$tool-$c" 1)
        rss=$(median "$WORK/$tool-$c" 2)
        extra=
        case $tool in
            source) name="smtp-source -d -s $c" ;;
            campaign) name="campaign send --concurrency $c"; extra=$vs_baseline ;;
            baseline) name="campaign (baseline) send --concurrency $c" ;;
        esac
        awk -v c="$c" -v t="$name" -v w="$wall" -v r="$rss" -v n="$COUNT" -v b="$BASELINE" -v x="$extra" \
            'BEGIN { printf "| %d | %s | %.3f | %.0f | %.1f |%s\n", c, t, w, n / w, r / 1024, b == "" ? "" : " " x " |" }'
    done
    target=0.8
    ((c == 1)) && target=0.6
    ratio=$(awk -v s="$(median "$WORK/source-$c" 1)" -v m="$(median "$WORK/campaign-$c" 1)" 'BEGIN { printf "%.2f", s / m }')
    summary+=("$c connection(s): campaign/smtp-source msg/s = $ratio (target >= $target); raw wall s: campaign $(raw "$WORK/campaign-$c" 1), smtp-source $(raw "$WORK/source-$c" 1); campaign peak RSS KB $(raw "$WORK/campaign-$c" 2); campaign CPU (user+sys) per message µs, median $(awk -v c="$(median "$WORK/campaign-$c" 5)" -v n="$COUNT" 'BEGIN { printf "%.0f", c * 1e6 / n }')")
    if [[ -n $BASELINE ]]; then
        summary+=("$c connection(s): campaign/baseline msg/s = $vs_baseline; baseline median wall s $(median "$WORK/baseline-$c" 1), msg/s $(awk -v w="$(median "$WORK/baseline-$c" 1)" -v n="$COUNT" 'BEGIN { printf "%.0f", n / w }'); campaign median wall s $(median "$WORK/campaign-$c" 1), msg/s $(awk -v w="$(median "$WORK/campaign-$c" 1)" -v n="$COUNT" 'BEGIN { printf "%.0f", n / w }'); raw wall s: baseline $(raw "$WORK/baseline-$c" 1); baseline peak RSS KB $(raw "$WORK/baseline-$c" 2)")
    fi
done
echo
for s in "${summary[@]}"; do echo "- $s"; done
