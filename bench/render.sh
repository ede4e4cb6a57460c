#!/usr/bin/env bash
# Benchmark message rendering: `campaign send RUN --dry-run --preview 0 --quiet` over a run of
# about 100k donors with the real fixture templates (fixtures/campaign.toml, templates in
# templates/: the major segment's HTML layout is about 10 KB rendered). See BENCHMARKS.md,
# section "Render".
#
#   bench/render.sh                  # 100k-row export, 5 runs
#   ROWS=1000000 RUNS=3 bench/render.sh
#   CAMPAIGN_BIN=/tmp/new/campaign CAMPAIGN_BASELINE=/tmp/old/campaign bench/render.sh
#
# Environment:
#   ROWS  data rows of the generated export (default 100000; same files as bench/segment.sh)
#   RUNS  timed runs (default 5)
#   SEED  generator seed (default 20261129)
#   CAMPAIGN_BIN, CAMPAIGN_GEN  binaries to use instead of building them (see bench/lib.sh)
#   CAMPAIGN_BASELINE  a second campaign binary (e.g. built before a change), run exactly like
#         campaign on the same run; the two take turns going first (run i starts with campaign
#         when i is odd), and the table adds its medians and the ratio of the two messages/s
#
# The export comes from examples/gen_donors.rs, whose columns are those of
# fixtures/donors.csv. It is segmented once (--as-of 2026-11-29); the dry run renders every
# donor of every segment with the code a real send uses and opens no connection. A dry run
# writes only previews/ (none with --preview 0) and failures.csv, so the run is reused.
# Messages/s = rendered messages (the run's segmented donors) / median wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROWS=${ROWS:-100000}
RUNS=${RUNS:-5}
FIXTURE_TOML=fixtures/campaign.toml

ensure_time
build
BASELINE=
if [[ -n ${CAMPAIGN_BASELINE:-} ]]; then
    BASELINE=$(given_binary CAMPAIGN_BASELINE "$CAMPAIGN_BASELINE")
fi
ensure_data "$ROWS"
f=$(data_file "$ROWS")
segment_run "$f" "$FIXTURE_TOML" "$WORK/run"
donors=$(python3 -c 'import json,sys; print(sum(s["rows"] for s in json.load(open(sys.argv[1]))["segments"]))' "$WORK/run/manifest.json")
# Rendered sizes: the first donor of each segment.
sizes=()
for chunk in "$WORK"/run/segments/*/00001.csv; do
    seg=$(basename "$(dirname "$chunk")")
    email=$(python3 -c 'import csv,sys; r = csv.DictReader(open(sys.argv[1], newline="")); print(next(r)["email"])' "$chunk")
    sizes+=("$seg=$("$CAMPAIGN" send "$WORK/run" --dry-run --print "$email" --raw 2>/dev/null | wc -c)")
done

dry_run() { measure "$1" "$2" send "$WORK/run" --dry-run --preview 0 --quiet; }
for ((i = 1; i <= RUNS; i++)); do
    log "run $i/$RUNS"
    if [[ -z $BASELINE ]]; then
        dry_run render "$CAMPAIGN"
    elif ((i % 2)); then
        dry_run render "$CAMPAIGN"
        dry_run baseline "$BASELINE"
    else
        dry_run baseline "$BASELINE"
        dry_run render "$CAMPAIGN"
    fi
done

machine_header "campaign send --dry-run (render) benchmark"
echo "# $f ($ROWS rows) segmented with $FIXTURE_TOML: $donors donors; rendered bytes of one message per segment: ${sizes[*]}"
echo "# runs: $RUNS (medians); dry run uses the default concurrency (CPUs = $(nproc))"
if [[ -n $BASELINE ]]; then
    echo "# baseline: CAMPAIGN_BASELINE=$BASELINE, sha256 $(bin_fingerprint "$BASELINE"); run i starts with campaign when i is odd"
fi
echo
echo "| binary | donors | median wall s | messages/s | median CPU µs/message (user+sys) | median peak RSS MB |"
echo "|---|---:|---:|---:|---:|---:|"
row() { # NAME FILE
    awk -v b="$1" -v n="$donors" -v w="$(median "$2" 1)" -v r="$(median "$2" 2)" -v c="$(median "$2" 5)" \
        'BEGIN { printf "| %s | %d | %.3f | %.0f | %.1f | %.1f |\n", b, n, w, n / w, c * 1e6 / n, r / 1024 }'
}
row campaign "$WORK/render"
if [[ -n $BASELINE ]]; then
    row baseline "$WORK/baseline"
fi
echo
echo "- campaign raw wall s: $(raw "$WORK/render" 1); CPU s: $(raw "$WORK/render" 5); peak RSS KB: $(raw "$WORK/render" 2)"
if [[ -n $BASELINE ]]; then
    echo "- baseline raw wall s: $(raw "$WORK/baseline" 1); CPU s: $(raw "$WORK/baseline" 5); peak RSS KB: $(raw "$WORK/baseline" 2)"
    awk -v b="$(median "$WORK/baseline" 1)" -v m="$(median "$WORK/render" 1)" \
        'BEGIN { printf "- campaign/baseline messages/s: %.2f\n", b / m }'
fi
