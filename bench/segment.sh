#!/usr/bin/env bash
# Benchmark `campaign segment` against the I/O floor (`cat`) and a baseline CSV splitter
# (`xsv partition country`). See BENCHMARKS.md, section "Segment".
#
#   bench/segment.sh                    # 1M and 10M rows, 5 runs each
#   bench/segment.sh 1000000            # one size only (quick)
#   ROWS="100000 1000000" RUNS=3 bench/segment.sh
#
# Environment:
#   ROWS   space-separated data-row counts (default "1000000 10000000"; arguments win)
#   RUNS   timed runs per tool and size (default 5); tools are interleaved run by run
#   SEED   generator seed (default 20261129); the file for N rows is always made with it
#
# Input files are generated once into bench-data/ (git-ignored) by examples/gen_donors.rs and
# reused. Installs xsv (cargo install) and GNU time (apt-get) if missing. Touches only local
# files; every run directory it makes is removed when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROWS=${*:-${ROWS:-1000000 10000000}}
RUNS=${RUNS:-5}
SEED=${SEED:-20261129}
AS_OF=2026-11-29
CAMPAIGN_TOML=bench/campaign.toml
DATA=bench-data
TINY_ROWS=100
mkdir -p "$DATA"
WORK=$(mktemp -d "$ROOT/$DATA/.runs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log() { printf '%s\n' "$*" >&2; }

# --- tools --------------------------------------------------------------------------------
if ! /usr/bin/time --version 2>&1 | grep -q GNU; then
    log "installing GNU time"
    if ! apt-get install -y time >/dev/null; then
        apt-get update >/dev/null && apt-get install -y time >/dev/null
    fi
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v xsv >/dev/null; then
    log "installing xsv"
    cargo install xsv --locked
fi

log "building (release)"
cargo build --release --quiet
cargo build --release --quiet --example gen_donors
# Others edit src/ while benchmarks run: record which sources the binary was built from.
SRC_FINGERPRINT=$(find src Cargo.toml Cargo.lock -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
CAMPAIGN=$ROOT/target/release/campaign
GEN=$ROOT/target/release/examples/gen_donors

# --- data ---------------------------------------------------------------------------------
label() { # 1000000 -> 1m, 250000 -> 250k
    local n=$1
    if ((n % 1000000 == 0)); then echo "$((n / 1000000))m"
    elif ((n % 1000 == 0)); then echo "$((n / 1000))k"
    else echo "$n"; fi
}
data_file() { echo "$DATA/donors-$(label "$1").csv"; }
ensure_data() {
    local n=$1 f
    f=$(data_file "$n")
    if [[ ! -s $f ]]; then
        log "generating $f ($n rows, seed $SEED)"
        "$GEN" --rows "$n" --seed "$SEED" --out "$f.tmp"
        mv "$f.tmp" "$f"
    fi
}

# --- measuring ----------------------------------------------------------------------------
# measure NAME CMD...: runs CMD under GNU time, appends "wall_s peak_rss_kb" to $WORK/NAME.
# Wall time comes from the shell's microsecond clock (GNU time's %e has only 10 ms
# resolution); peak RSS is GNU time's %M, in KB.
measure() {
    local name=$1 t0 t1
    shift
    t0=$EPOCHREALTIME
    if ! /usr/bin/time -f '%e %M' -o "$WORK/time.out" "$@" >/dev/null 2>"$WORK/stderr"; then
        log "FAILED: $*"
        cat "$WORK/stderr" >&2
        exit 1
    fi
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" -v l="$(tail -n 1 "$WORK/time.out")" \
        'BEGIN { split(l, f, " "); printf "%.4f %d\n", b - a, f[2] }' >>"$WORK/$name"
}
median() { # median of column $2 of file $1
    sort -g -k"$2","$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
run_campaign() { # FILE OUT
    rm -rf "$2"
    measure "$3" "$CAMPAIGN" segment "$1" --campaign "$CAMPAIGN_TOML" --out "$2" \
        --as-of "$AS_OF" --quiet --force
    rm -rf "$2"
}
run_xsv() { # FILE OUTDIR NAME
    rm -rf "$2"
    mkdir -p "$2"
    measure "$3" xsv partition country "$2" "$1"
    rm -rf "$2"
}

# Fixed memory of campaign: peak RSS on a tiny input.
ensure_data "$TINY_ROWS"
tiny=$(data_file "$TINY_ROWS")
for ((i = 1; i <= RUNS; i++)); do
    run_campaign "$tiny" "$WORK/run" tiny
done
tiny_rss_kb=$(median "$WORK/tiny" 2)

echo "# campaign segment benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
echo "# sources (src/, Cargo.toml, Cargo.lock) sha256 fingerprint: $SRC_FINGERPRINT; xsv $(xsv --version)"
echo "# runs per cell: $RUNS (medians); campaign peak RSS at $TINY_ROWS rows: $tiny_rss_kb KB"
echo
echo "| rows | tool | median wall s | rows/s | MB/s | median peak RSS MB |"
echo "|---:|---|---:|---:|---:|---:|"
summary=()
for n in $ROWS; do
    ensure_data "$n"
    f=$(data_file "$n")
    bytes=$(stat -c %s "$f")
    rm -f "$WORK"/{cat,xsv,campaign}
    cat "$f" >/dev/null # warm the page cache, untimed
    for ((i = 1; i <= RUNS; i++)); do
        log "$(label "$n") run $i/$RUNS"
        measure cat cat "$f"
        run_xsv "$f" "$WORK/xsv-out" xsv
        run_campaign "$f" "$WORK/run" campaign
    done
    for tool in cat xsv campaign; do
        wall=$(median "$WORK/$tool" 1)
        rss=$(median "$WORK/$tool" 2)
        awk -v n="$n" -v t="$tool" -v w="$wall" -v r="$rss" -v b="$bytes" 'BEGIN {
            w1 = (w > 0) ? w : 0.005
            printf "| %d | %s | %.3f | %.0f | %.0f | %.1f |\n", n, t, w, n / w1, b / 1e6 / w1, r / 1024 }'
    done
    ratio=$(awk -v c="$(median "$WORK/campaign" 1)" -v x="$(median "$WORK/xsv" 1)" 'BEGIN { printf "%.2f", c / x }')
    per_row=$(awk -v r="$(median "$WORK/campaign" 2)" -v t="$tiny_rss_kb" -v n="$n" 'BEGIN { printf "%.1f", (r - t) * 1024 / n }')
    summary+=("$(label "$n"): campaign/xsv wall = $ratio (target <= 0.6); (RSS - RSS@$TINY_ROWS rows)/rows = $per_row bytes (target <= ~40); raw wall s: campaign $(cut -d' ' -f1 "$WORK/campaign" | paste -sd' '), xsv $(cut -d' ' -f1 "$WORK/xsv" | paste -sd' '); campaign peak RSS KB $(cut -d' ' -f2 "$WORK/campaign" | paste -sd' ')")
done
echo
for s in "${summary[@]}"; do echo "- $s"; done
