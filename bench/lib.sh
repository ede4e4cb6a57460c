# Shared helpers for bench/send.sh, bench/peer.sh, bench/render.sh and bench/scale.sh.
# Sourced, not run. Expects `set -euo pipefail` and the working directory at the repository root.
#
# Provides: tool installers (GNU time, postfix's smtp-sink/smtp-source, a mailmerge venv), the
# release build, generated inputs in bench-data/, a timing wrapper that records wall time and
# peak RSS, medians, and loopback smtp-sink servers that are killed when the script exits.
# Everything network-related listens on or connects to 127.0.0.1 only.
#
# `build` honours two optional variables (unset: build both from this checkout, as before):
#   CAMPAIGN_BIN  use this campaign binary instead of building it (e.g. one built in a git
#                 worktree at a given commit); the header then gives its sha256, not src/'s
#   CAMPAIGN_GEN  use this gen_donors binary; unset, only the example is built here

ROOT=$PWD
DATA=bench-data
SEED=${SEED:-20261129}
AS_OF=2026-11-29
# Any 32 characters: the unsubscribe-token secret a real send requires.
export CAMPAIGN_UNSUBSCRIBE_SECRET=bench-secret-0123456789abcdef012
mkdir -p "$DATA"
WORK=$(mktemp -d "$ROOT/$DATA/.runs.XXXXXX")
# Where benchmarked tools write their output (run directories, partitions): OUT_DIR if set
# (e.g. OUT_DIR=/dev/shm to leave the disk and its page cache out), else inside $WORK.
if [[ -n ${OUT_DIR:-} ]]; then
    OUT=$(mktemp -d "$OUT_DIR/campaign-bench.XXXXXX")
else
    OUT=$WORK/out
    mkdir -p "$OUT"
fi
SERVER_PIDS=()
cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$OUT" "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# --- tools --------------------------------------------------------------------------------
apt_install() { # PACKAGE...: apt-get install, with one `apt-get update` retry
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null; then
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null
    fi
}
ensure_time() {
    if ! /usr/bin/time --version 2>&1 | grep -q GNU; then
        log "installing GNU time"
        apt_install time
    fi
}
SMTP_SINK=/usr/sbin/smtp-sink
SMTP_SOURCE=/usr/sbin/smtp-source
ensure_postfix() { # smtp-sink and smtp-source; no mail system configured, no daemon started
    if [[ ! -x $SMTP_SINK || ! -x $SMTP_SOURCE ]]; then
        log "installing postfix (for smtp-sink and smtp-source)"
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        echo "postfix postfix/mailname string localhost" | debconf-set-selections
        apt_install postfix
    fi
}
# ensure_venv PACKAGE MODULE: a venv at $DATA/venv-PACKAGE whose Python can import MODULE,
# installing PACKAGE with pip when it cannot.
ensure_venv() {
    local venv=$DATA/venv-$1
    if ! "$venv/bin/python" -c "import $2" 2>/dev/null; then
        log "installing $1 into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "$1"
    fi
}
MAILMERGE_VENV=$DATA/venv-mailmerge
ensure_mailmerge() { ensure_venv mailmerge mailmerge; }

given_binary() { # VARIABLE PATH: absolute path of an executable given in VARIABLE, or exit
    if [[ ! -x $2 || -d $2 ]]; then
        log "$1=$2 is not an executable file"
        exit 1
    fi
    realpath "$2"
}
bin_fingerprint() { sha256sum "$1" | cut -c1-12; } # FILE: first 12 hex digits of its sha256

build() {
    if [[ -z ${CAMPAIGN_BIN:-} ]]; then
        log "building (release)"
        cargo build --release --quiet
    fi
    if [[ -z ${CAMPAIGN_GEN:-} ]]; then
        if [[ -n ${CAMPAIGN_BIN:-} ]]; then log "building gen_donors (release)"; fi
        cargo build --release --quiet --example gen_donors
        GEN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/gen_donors
    else
        GEN=$(given_binary CAMPAIGN_GEN "$CAMPAIGN_GEN")
    fi
    if [[ -n ${CAMPAIGN_BIN:-} ]]; then
        CAMPAIGN=$(given_binary CAMPAIGN_BIN "$CAMPAIGN_BIN")
        SRC_FINGERPRINT=
    else
        # Others edit src/ while benchmarks run: record which sources the binary was built from.
        SRC_FINGERPRINT=$(find src Cargo.toml Cargo.lock -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
        CAMPAIGN=${CARGO_TARGET_DIR:-$ROOT/target}/release/campaign
    fi
}

machine_header() { # TITLE
    echo "# $1, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
    if [[ -n ${CAMPAIGN_BIN:-} ]]; then
        echo "# campaign: CAMPAIGN_BIN=$CAMPAIGN (not built here), sha256 $(bin_fingerprint "$CAMPAIGN")"
    else
        echo "# sources (src/, Cargo.toml, Cargo.lock) sha256 fingerprint: $SRC_FINGERPRINT"
    fi
}

# --- data ---------------------------------------------------------------------------------
label() { # 1000000 -> 1m, 250000 -> 250k
    local n=$1
    if ((n % 1000000 == 0)); then echo "$((n / 1000000))m"
    elif ((n % 1000 == 0)); then echo "$((n / 1000))k"
    else echo "$n"; fi
}
data_file() { echo "$DATA/donors-$(label "$1").csv"; }
ensure_data() { # N: generated export of N data rows (same files as bench/segment.sh)
    local n=$1 f
    f=$(data_file "$n")
    if [[ ! -s $f ]]; then
        log "generating $f ($n rows, seed $SEED)"
        "$GEN" --rows "$n" --seed "$SEED" --out "$f.tmp"
        mv "$f.tmp" "$f"
    fi
}
# exact_donors N: prints the path of an export of exactly N rows that are all deliverable
# donors: the generated export's rows that `campaign segment` keeps (valid, first occurrence),
# in file order, with ASCII addresses only (smtp-source and mailmerge cannot send SMTPUTF8).
# So every row becomes exactly one message.
exact_donors() { # N [CAMPAIGN_TOML]: N rows every one of which that campaign segments
    local n=$1 toml=${2:-bench/send-campaign.toml} src out rows suffix=
    [[ $toml == bench/send-campaign.toml ]] || suffix=-$(basename "$(dirname "$toml")")
    out="$DATA/donors-exact-$(label "$n")$suffix.csv"
    if [[ ! -s $out ]]; then
        rows=$((n + n / 10 + 100))
        src="$WORK/exact-src.csv"
        "$GEN" --rows "$rows" --seed "$SEED" --out "$src"
        rm -rf "$WORK/exact-run"
        "$CAMPAIGN" segment "$src" --campaign "$toml" --out "$WORK/exact-run" \
            --as-of "$AS_OF" --quiet >/dev/null
        python3 - "$src" "$WORK/exact-run" "$n" "$out.tmp" <<'PY'
import csv, glob, sys
src, run, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
kept = set()
for chunk in glob.glob(f"{run}/segments/*/*.csv"):
    with open(chunk, newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        i = next(r).index("email")
        kept.update(row[i] for row in r)
with open(src, newline="", encoding="utf-8") as f, open(out, "w", newline="", encoding="utf-8") as o:
    r, w = csv.reader(f), csv.writer(o, lineterminator="\n")
    header = next(r)
    i = header.index("email")
    w.writerow(header)
    count = 0
    for row in r:
        if count == n:
            break
        if row[i] in kept and row[i].isascii():
            w.writerow(row)
            count += 1
if count != n:
    sys.exit(f"only {count} deliverable rows, wanted {n}")
PY
        mv "$out.tmp" "$out"
        rm -rf "$WORK/exact-run" "$src"
    fi
    echo "$out"
}
segment_run() { # CSV CAMPAIGN_TOML OUT [SEGMENT OPTIONS...]: segment into OUT (replacing it)
    local csv=$1 toml=$2 out=$3
    shift 3
    rm -rf "$out"
    "$CAMPAIGN" segment "$csv" --campaign "$toml" --out "$out" --as-of "$AS_OF" --quiet --force "$@" >/dev/null
}

# --- measuring ----------------------------------------------------------------------------
# measure NAME CMD...: runs CMD under GNU time, appends "wall_s peak_rss_kb user_s sys_s" to
# $WORK/NAME.
# Wall time comes from the shell's microsecond clock (GNU time's %e has only 10 ms
# resolution); peak RSS is GNU time's %M, in KB. CMD's stdout goes to $WORK/NAME.stdout
# (kept for the last run). A non-zero exit aborts the script.
measure() {
    local name=$1 t0 t1
    shift
    t0=$EPOCHREALTIME
    if ! /usr/bin/time -f '%e %M %U %S' -o "$WORK/time.out" "$@" >"$WORK/$name.stdout" 2>"$WORK/stderr"; then
        log "FAILED: $*"
        cat "$WORK/stderr" >&2
        exit 1
    fi
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" -v l="$(tail -n 1 "$WORK/time.out")" \
        'BEGIN { split(l, f, " "); printf "%.4f %d %.2f %.2f %.2f\n", b - a, f[2], f[3], f[4], f[3] + f[4] }' >>"$WORK/$name"
}
median() { # median of column $2 of file $1
    sort -g -k"$2","$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
raw() { cut -d' ' -f"$2" "$1" | paste -sd' '; } # all values of column $2 of file $1
# sent_count: messages sent according to the JSON summary of the last `campaign send --json`
# measured as NAME ($WORK/NAME.stdout).
sent_count() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["session"]["sent"])' "$WORK/$1.stdout"
}

# --- loopback SMTP server -----------------------------------------------------------------
free_port() { # an unused TCP port on 127.0.0.1
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# start_sink [SMTP-SINK OPTIONS...]: starts smtp-sink on 127.0.0.1 at a free port (discarding
# every message), sets SINK_PORT, and registers it to be killed on exit.
start_sink() {
    local user=() pid
    [[ $(id -u) == 0 ]] && user=(-u nobody)
    SINK_PORT=$(free_port)
    "$SMTP_SINK" "${user[@]}" "$@" "127.0.0.1:$SINK_PORT" 256 >/dev/null 2>"$WORK/sink.err" &
    pid=$!
    SERVER_PIDS+=("$pid")
    wait_listening "$SINK_PORT" "$pid" smtp-sink "$WORK/sink.err"
}
# wait_listening PORT PID NAME ERRFILE: waits (up to 10 s) until PID listens on 127.0.0.1:PORT;
# exits the script with ERRFILE shown if it dies or never does.
wait_listening() {
    local i
    for ((i = 0; i < 200; i++)); do
        if ss -Hltn "sport = :$1" | grep -q .; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    log "$3 did not start on 127.0.0.1:$1"
    cat "$4" >&2
    exit 1
}
