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
#   OUT_DIR where both tools write (default: bench-data/); OUT_DIR=/dev/shm takes the disk,
#          the file system's history and this VM's page-cache cost out of the comparison
#
# Input files are generated once into bench-data/ (git-ignored) by examples/gen_donors.rs and
# reused. Installs xsv (cargo install) and GNU time (apt-get) if missing. Touches only local
# files; every run directory it makes is removed when it exits. Shared helpers (build, data,
# measure, median) are in bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROWS=${*:-${ROWS:-1000000 10000000}}
RUNS=${RUNS:-5}
CAMPAIGN_TOML=bench/campaign.toml
TINY_ROWS=100

# --- tools --------------------------------------------------------------------------------
ensure_time
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v xsv >/dev/null; then
    log "installing xsv"
    cargo install xsv --locked
fi
build

# Every timed run writes to a directory of its own, and a size's outputs are removed only
# after all its runs. Removing them between runs put thousands of just-freed inodes in front
# of the next run: ext4 without a journal (this machine's root) will not reuse an inode freed
# in the last 60 s (6 min while its table block is unwritten), and looks past every such
# inode, from the start of the block group, for each file it creates. That cost campaign,
# which creates one file per 1000 rows, up to 3 s of kernel time at 10M rows (perf:
# recently_deleted / find_inode_bit), a cost of deleting 10,000 files just before, not of
# segmenting; xsv writes a handful of files and never met it.
RUN_SEQ=0
run_campaign() { # FILE NAME
    RUN_SEQ=$((RUN_SEQ + 1))
    measure "$2" "$CAMPAIGN" segment "$1" --campaign "$CAMPAIGN_TOML" \
        --out "$OUT/campaign-$RUN_SEQ" --as-of "$AS_OF" --quiet --force
}
run_xsv() { # FILE NAME
    RUN_SEQ=$((RUN_SEQ + 1))
    mkdir -p "$OUT/xsv-$RUN_SEQ"
    measure "$2" xsv partition country "$OUT/xsv-$RUN_SEQ" "$1"
}

# Fixed memory of campaign: peak RSS on a tiny input.
ensure_data "$TINY_ROWS"
tiny=$(data_file "$TINY_ROWS")
for ((i = 1; i <= RUNS; i++)); do
    run_campaign "$tiny" tiny
done
rm -rf "${OUT:?}"/*
tiny_rss_kb=$(median "$WORK/tiny" 2)

machine_header "campaign segment benchmark"
echo "# xsv $(xsv --version)"
echo "# runs per cell: $RUNS (medians); campaign peak RSS at $TINY_ROWS rows: $tiny_rss_kb KB"
echo
echo "| rows | tool | median wall s | rows/s | MB/s | median peak RSS MB | median user s | median sys s |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|"
summary=()
for n in $ROWS; do
    ensure_data "$n"
    f=$(data_file "$n")
    bytes=$(stat -c %s "$f")
    rm -f "$WORK"/{cat,xsv,campaign}
    cat "$f" >/dev/null # warm the page cache, untimed
    for ((i = 1; i <= RUNS; i++)); do
        log "$(label "$n") run $i/$RUNS"
        measure cat sh -c 'exec cat "$1" >/dev/null' sh "$f"
        # Alternate which tool goes first: system time grows run by run as the page cache
        # fills with the outputs kept until the end, so a fixed order favours the first tool.
        if ((i % 2)); then
            run_xsv "$f" xsv
            run_campaign "$f" campaign
        else
            run_campaign "$f" campaign
            run_xsv "$f" xsv
        fi
    done
    rm -rf "${OUT:?}"/*
    for tool in cat xsv campaign; do
        wall=$(median "$WORK/$tool" 1)
        rss=$(median "$WORK/$tool" 2)
        usr=$(median "$WORK/$tool" 3)
        sys=$(median "$WORK/$tool" 4)
        awk -v n="$n" -v t="$tool" -v w="$wall" -v r="$rss" -v b="$bytes" -v u="$usr" -v s="$sys" 'BEGIN {
            w1 = (w > 0) ? w : 0.005
            printf "| %d | %s | %.3f | %.0f | %.0f | %.1f | %.2f | %.2f |\n", n, t, w, n / w1, b / 1e6 / w1, r / 1024, u, s }'
    done
    ratio=$(awk -v c="$(median "$WORK/campaign" 1)" -v x="$(median "$WORK/xsv" 1)" 'BEGIN { printf "%.2f", c / x }')
    per_row=$(awk -v r="$(median "$WORK/campaign" 2)" -v t="$tiny_rss_kb" -v n="$n" 'BEGIN { printf "%.1f", (r - t) * 1024 / n }')
    summary+=("$(label "$n"): campaign/xsv wall = $ratio (target <= 0.6); (RSS - RSS@$TINY_ROWS rows)/rows = $per_row bytes (target <= ~40); raw wall s: campaign $(cut -d' ' -f1 "$WORK/campaign" | paste -sd' '), xsv $(cut -d' ' -f1 "$WORK/xsv" | paste -sd' '); campaign peak RSS KB $(cut -d' ' -f2 "$WORK/campaign" | paste -sd' ')")
done
echo
for s in "${summary[@]}"; do echo "- $s"; done
