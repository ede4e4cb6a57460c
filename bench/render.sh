#!/usr/bin/env bash
# Benchmark message rendering: `campaign send RUN --dry-run --preview 0 --quiet` over a run of
# about 100k donors with the real fixture templates (fixtures/campaign.toml, templates in
# templates/: the major segment's HTML layout is about 10 KB rendered). See BENCHMARKS.md,
# section "Render".
#
#   bench/render.sh                  # 100k-row export, 5 runs
#   ROWS=1000000 RUNS=3 bench/render.sh
#
# Environment:
#   ROWS  data rows of the generated export (default 100000; same files as bench/segment.sh)
#   RUNS  timed runs (default 5)
#   SEED  generator seed (default 20261129)
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

for ((i = 1; i <= RUNS; i++)); do
    log "run $i/$RUNS"
    measure render "$CAMPAIGN" send "$WORK/run" --dry-run --preview 0 --quiet
done

machine_header "campaign send --dry-run (render) benchmark"
echo "# $f ($ROWS rows) segmented with $FIXTURE_TOML: $donors donors; rendered bytes of one message per segment: ${sizes[*]}"
echo "# runs: $RUNS (medians); dry run uses the default concurrency (CPUs = $(nproc))"
echo
echo "| donors | median wall s | messages/s | median peak RSS MB |"
echo "|---:|---:|---:|---:|"
awk -v n="$donors" -v w="$(median "$WORK/render" 1)" -v r="$(median "$WORK/render" 2)" \
    'BEGIN { printf "| %d | %.3f | %.0f | %.1f |\n", n, w, n / w, r / 1024 }'
echo
echo "- raw wall s: $(raw "$WORK/render" 1); peak RSS KB: $(raw "$WORK/render" 2)"
