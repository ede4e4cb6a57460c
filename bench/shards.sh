#!/usr/bin/env bash
# Sharding's overhead: `campaign send --shard I/N` with N = 1, 2 and 4 processes of 4
# connections each, all at once on one run directory, against one plain `campaign send` with
# the same total connections (4, 8, 16), both to one `smtp-sink` on loopback. The target: the
# shards' total msg/s within 10% of the single process's. See BENCHMARKS.md, section
# "Shards".
#
#   bench/shards.sh                 # 100000 donors, 3 runs per cell (~5 min)
#   COUNT=20000 RUNS=5 bench/shards.sh
#
# Environment:
#   COUNT       donors (default 100000), each exactly one message
#   SHARDS      space-separated shard counts (default "1 2 4")
#   PER         connections per shard process (default 4)
#   RUNS        timed runs per cell (default 3); the two take turns going first
#   CHUNK       --chunk-size for segment (default 2500: 40 chunks at 100k, so 4 shards get 10)
#   CAMPAIGN_BIN  campaign binary to use instead of building one
#
# The run is segmented once and copied fresh for every run, so every ledger starts empty.
# Only 127.0.0.1 is contacted; the sink is killed and every run directory removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

COUNT=${COUNT:-100000}
SHARDS=${SHARDS:-1 2 4}
PER=${PER:-4}
RUNS=${RUNS:-3}
CHUNK=${CHUNK:-2500}

ensure_time
ensure_postfix
build
donors=$(exact_donors "$COUNT")
segment_run "$donors" bench/send-campaign.toml "$WORK/template-run" --chunk-size "$CHUNK"
start_sink
export CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$SINK_PORT"

sent_in() { # RUN: messages the ledgers call sent
    { "$CAMPAIGN" status "$1" --json || true; } | python3 -c 'import json,sys; print(sum(s["sent"] for s in json.load(sys.stdin)["segments"]))'
}
fresh() { rm -rf "$WORK/run"; cp -r "$WORK/template-run" "$WORK/run"; }
check_sent() {
    local sent
    sent=$(sent_in "$WORK/run")
    if [[ $sent != "$COUNT" ]]; then
        log "$1 sent $sent messages, expected $COUNT"
        exit 1
    fi
}
run_single() { # SHARDS NAME: one process with SHARDS x PER connections
    fresh
    measure "$2" "$CAMPAIGN" send "$WORK/run" --concurrency $(($1 * PER)) --json --quiet
    check_sent "one process"
}
run_shards() { # SHARDS NAME: SHARDS processes of PER connections, started together
    fresh
    measure "$2" bash -c '
        n=$1 per=$2 bin=$3 run=$4 codes=0
        for ((i = 0; i < n; i++)); do
            "$bin" send "$run" --shard "$i/$n" --concurrency "$per" --json --quiet >/dev/null &
        done
        for ((i = 0; i < n; i++)); do wait -n || codes=1; done
        exit $codes' _ "$1" "$PER" "$CAMPAIGN" "$WORK/run"
    check_sent "$1 shards"
}

machine_header "campaign send --shard benchmark"
echo "# smtp-sink on 127.0.0.1:$SINK_PORT; $COUNT messages per run; chunks of $CHUNK; $PER connections per shard; runs per cell: $RUNS (medians), the two take turns going first"
echo
echo "| shards x connections | one process, same connections: msg/s | shards: total msg/s | shards / one process |"
echo "|---|---:|---:|---:|"
summary=()
for n in $SHARDS; do
    for ((i = 1; i <= RUNS; i++)); do
        log "$n shard(s), run $i/$RUNS"
        if ((i % 2)); then
            run_single "$n" "single-$n"
            run_shards "$n" "shards-$n"
        else
            run_shards "$n" "shards-$n"
            run_single "$n" "single-$n"
        fi
    done
    s=$(median "$WORK/single-$n" 1)
    m=$(median "$WORK/shards-$n" 1)
    awk -v n="$n" -v p="$PER" -v s="$s" -v m="$m" -v c="$COUNT" \
        'BEGIN { printf "| %d x %d | %.0f | %.0f | %.2f |\n", n, p, c / s, c / m, s / m }'
    summary+=("$n shard(s) x $PER: shards/one-process msg/s = $(awk -v s="$s" -v m="$m" 'BEGIN { printf "%.2f", s / m }') (target >= 0.90); raw wall s: one process $(raw "$WORK/single-$n" 1), shards $(raw "$WORK/shards-$n" 1); CPU s (user+sys): one process $(raw "$WORK/single-$n" 5), shards $(raw "$WORK/shards-$n" 5)")
done
echo
for s in "${summary[@]}"; do echo "- $s"; done
