#!/usr/bin/env bash
# What `segment --delimiter` costs: `campaign segment` on the generated export and on the same
# export written with semicolons (`--delimiter ';'`, whose rows are written again with commas
# into the run), interleaved run by run; optionally against a baseline binary on the comma
# export, to show the comma path did not slow down. See BENCHMARKS.md, "Segment: delimiters".
#
#   bench/delimiter.sh                                  # 1M rows, 7 runs
#   BASELINE_BIN=/path/to/campaign-at-main bench/delimiter.sh
#   ROWS=100000 RUNS=3 bench/delimiter.sh
#
# Environment:
#   ROWS          data rows (default 1000000); the file is bench/segment.sh's, same seed
#   RUNS          timed runs per case (default 7)
#   BASELINE_BIN  a campaign binary built at another commit, timed on the comma export only
#   CAMPAIGN_BIN, CAMPAIGN_GEN, OUT_DIR  as in bench/lib.sh
#
# It also checks that both runs of the last round hold the same chunk and dropped files, byte
# for byte: a semicolon export must make the run its comma twin makes. Touches only local
# files; every run directory is removed when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROWS=${ROWS:-1000000}
RUNS=${RUNS:-7}
CAMPAIGN_TOML=bench/campaign.toml

ensure_time
build
BASELINE=
if [[ -n ${BASELINE_BIN:-} ]]; then
    BASELINE=$(given_binary BASELINE_BIN "$BASELINE_BIN")
fi

ensure_data "$ROWS"
comma=$(data_file "$ROWS")
semicolon="$DATA/donors-$(label "$ROWS")-semicolon.csv"
if [[ ! -s $semicolon ]]; then
    log "writing $semicolon"
    python3 - "$comma" "$semicolon.tmp" <<'PY'
import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8", errors="surrogateescape") as f, \
        open(sys.argv[2], "w", newline="", encoding="utf-8", errors="surrogateescape") as o:
    w = csv.writer(o, delimiter=";", lineterminator="\n")
    for row in csv.reader(f):
        w.writerow(row)
PY
    mv "$semicolon.tmp" "$semicolon"
fi

run() { # NAME BIN FILE [FLAGS...]: one timed segment into $OUT/NAME
    local name=$1 bin=$2 file=$3
    shift 3
    rm -rf "${OUT:?}/$name"
    measure "$name" "$bin" segment "$file" --campaign "$CAMPAIGN_TOML" --out "$OUT/$name" \
        --as-of "$AS_OF" --quiet --force "$@"
}
cases=(comma semicolon)
if [[ -n $BASELINE ]]; then cases=(baseline "${cases[@]}"); fi
cat "$comma" "$semicolon" >/dev/null # warm the page cache, untimed
for ((i = 1; i <= RUNS; i++)); do
    log "run $i/$RUNS"
    # Alternate the order: whoever runs first after a pause meets a colder machine.
    order=("${cases[@]}")
    if ((i % 2 == 0)); then mapfile -t order < <(printf "%s\n" "${cases[@]}" | tac); fi
    for c in "${order[@]}"; do
        case $c in
            baseline) run baseline "$BASELINE" "$comma" ;;
            comma) run comma "$CAMPAIGN" "$comma" ;;
            semicolon) run semicolon "$CAMPAIGN" "$semicolon" --delimiter ';' ;;
        esac
    done
done
same=yes
for d in segments dropped; do
    diff -rq "$OUT/comma/$d" "$OUT/semicolon/$d" >&2 || same=NO
done

machine_header "campaign segment --delimiter benchmark"
if [[ -n $BASELINE ]]; then echo "# baseline: $BASELINE, sha256 $(bin_fingerprint "$BASELINE")"; fi
echo "# $ROWS rows; runs per case: $RUNS (medians)"
echo
echo "| export | binary | median wall s | median user s | median sys s | median peak RSS MB |"
echo "|---|---|---:|---:|---:|---:|"
for c in "${cases[@]}"; do
    case $c in
        baseline) what="comma|baseline" ;;
        comma) what="comma|campaign" ;;
        semicolon) what="semicolon, --delimiter ';'|campaign" ;;
    esac
    awk -v w="$(median "$WORK/$c" 1)" -v r="$(median "$WORK/$c" 2)" -v u="$(median "$WORK/$c" 3)" \
        -v s="$(median "$WORK/$c" 4)" -v what="$what" 'BEGIN {
        split(what, p, "|"); printf "| %s | %s | %.3f | %.2f | %.2f | %.1f |\n", p[1], p[2], w, u, s, r / 1024 }'
done
echo
ratio() { awk -v a="$(median "$WORK/$1" "$3")" -v b="$(median "$WORK/$2" "$3")" 'BEGIN { printf "%.2f", a / b }'; }
echo "- semicolon/comma: wall $(ratio semicolon comma 1), user+sys CPU $(ratio semicolon comma 5)"
if [[ -n $BASELINE ]]; then
    echo "- comma, campaign/baseline: wall $(ratio comma baseline 1), user+sys CPU $(ratio comma baseline 5)"
fi
echo "- semicolon run's chunk and dropped files byte-identical to the comma run's: $same"
for c in "${cases[@]}"; do echo "- raw wall s, $c: $(raw "$WORK/$c" 1)"; done
