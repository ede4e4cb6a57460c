#!/usr/bin/env bash
# The system-tools test lane: `campaign send` against postfix's real smtp-sink with its fault
# flags (soft and hard rejects, 421 and disconnects at each stage, a server that exits
# mid-run, no ESMTP, no PIPELINING, no enhanced codes, slow replies), and DKIM signatures on
# what the sink received, verified by dkimpy (tests/system/dkim_verify.py) with keys made by
# openssl at test time. For every case: the exit code,
# the ledger (status) against the report and against the messages the sink received, and a
# re-run against a healthy sink that finishes the rest with nobody mailed twice.
# And one case against a real throwaway postfix instance (tests/system/postfix.sh, run as
# root from a temp dir): it accepts a run sent with a VERP return path, bounces every donor
# (5.1.1) and writes its own DSNs to the alias of the return path, an mbox, which
# `campaign bounces` reads back into a suppression list and the run's ledger (status).
# And a takeover from "another host": a shard run under `unshare -m` with a bind-mounted fake
# boot id is killed mid-run and the run finished here: nobody twice, unknown at most one
# batch per connection (root only).
# And CHUNKING against a real postfix smtpd (tests/system/discard_postfix.sh, root): offered,
# every message goes by BDAT (smtpd's own per-session command counts say so), every donor
# arrives once (discard(8) logs each delivery), a recipient smtpd refuses at RCPT is failed
# and suppressed, never sent; with `[smtp] chunking = false`, or CHUNKING hidden by smtpd, DATA.
#
#   bash tests/system/faults.sh          # installs postfix if smtp-sink is missing
#   KEEP=1 bash tests/system/faults.sh   # keep the temp dirs (printed by failing cases)
#   CASES="postfix_chunking" bash tests/system/faults.sh   # only these cases
#
# Only 127.0.0.1 is contacted; every sink and postfix instance is stopped when its case ends
# (KEEP=1 too) and every temp dir removed on exit.
# Ends with a line "N passed, M failed" and exits non-zero if any case failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v smtp-sink >/dev/null && [[ ! -x /usr/sbin/smtp-sink ]]; then
    echo "installing postfix (for smtp-sink) and iproute2 (for ss)" >&2
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix iproute2 >/dev/null
fi
SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
# dkimpy (and PyNaCl for Ed25519) from Debian, for the system Python: an independent verifier.
PY=/usr/bin/python3
if ! "$PY" -c 'import dkim, nacl' 2>/dev/null; then
    echo "installing dkimpy and PyNaCl (python3-dkim, python3-nacl) and openssl" >&2
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dkim python3-nacl openssl >/dev/null
fi

cargo build --locked --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/campaign

# `campaign status run --json` in the current directory: exit 0 (complete), 5 (donors left)
# or 6 (halted) are answers; anything else is a failure.
status_json() {
    local rc=0
    "$BIN" status run --json || rc=$?
    case $rc in 0 | 5 | 6) ;; *) echo "campaign status exited $rc" >&2; return 1 ;; esac
}
# start_postfix, stop_postfix, wait_for_dsns: a throwaway postfix instance.
source tests/system/postfix.sh
# discard_postfix_start and _stop, discard_postfix_drained: one that delivers nowhere.
source tests/system/discard_postfix.sh
TOP=$(mktemp -d)
# smtp-sink runs as nobody when started by root: it must reach the case directories.
chmod 755 "$TOP"
PIDS=()
# kill_sinks: the sinks this shell started (each case runs in a subshell, with its own PIDS,
# and calls this when it ends).
kill_sinks() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_all_postfix
    kill_sinks
    rm -rf "$TOP"
}
trap cleanup EXIT
[[ -n ${KEEP:-} ]] && trap stop_all_postfix EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_sink DIR [FLAGS...]: a sink on a free port appending every message to a dump file in
# DIR/dumps/ (smtp-sink adds a random suffix to the name); sets PORT.
start_sink() {
    local dir=$1 user=()
    shift
    [[ $(id -u) == 0 ]] && user=(-u nobody)
    PORT=$(free_port)
    mkdir -p "$dir/dumps" && chmod 777 "$dir/dumps"
    "$SINK" "${user[@]}" -D "$dir/dumps/dump-" -S 'From sink\n' "$@" "127.0.0.1:$PORT" 256 2>>"$TOP/sink.err" &
    PIDS+=($!)
    for _ in $(seq 100); do
        ss -Hltn "sport = :$PORT" | grep -q . && return 0
        sleep 0.05
    done
    echo "smtp-sink did not start" >&2
    return 1
}

# new_run DIR N: a campaign, its templates and N donors, segmented into DIR/run.
# MESSAGE_TOML: lines added to [message]; EXTRA_TOML: lines added at the end.
new_run() {
    local dir=$1 n=$2
    mkdir -p "$dir/templates/all"
    cat >"$dir/campaign.toml" <<'TOML'
[campaign]
id = "faults-2026"
[message]
from = "Friends of the Park <appeal@park.example>"
unsubscribe_url = "https://park.example/u?t={{ unsubscribe_token }}"
TOML
    if [[ -n ${MESSAGE_TOML:-} ]]; then printf '%s\n' "$MESSAGE_TOML" >>"$dir/campaign.toml"; fi
    printf '[[segment]]\nname = "all"\n' >>"$dir/campaign.toml"
    if [[ -n ${EXTRA_TOML:-} ]]; then printf '%s\n' "$EXTRA_TOML" >>"$dir/campaign.toml"; fi
    printf 'Hello {{ name }}\n' >"$dir/templates/all/subject.txt"
    printf 'Dear {{ name }},\nthank you.\n' >"$dir/templates/all/body.txt"
    { echo "email,name"; for ((i = 0; i < n; i++)); do echo "d$i@example.org,Donor $i"; done; } >"$dir/donors.csv"
    (cd "$dir" && "$BIN" segment donors.csv --campaign campaign.toml --out run --as-of 2026-11-29 --chunk-size 10 >/dev/null)
}

# send DIR PORT ARGS...: runs a send; sets CODE.
send() {
    local dir=$1 port=$2
    shift 2
    set +e
    (cd "$dir" && CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$port" \
        CAMPAIGN_UNSUBSCRIBE_SECRET=faults-secret-0123456789abcdef \
        "$BIN" send run --retry-delay 0.05 --json --quiet "$@" >"$dir/out.json" 2>"$dir/err.txt")
    CODE=$?
    set -e
}

# check DIR EXPECT...: compares the ledger (status), the report and the sinks' dumps.
# EXPECT is field=value pairs over: code, sent, failed, deferred, unknown, pending, stop,
# received (messages in the dumps), once (1: nobody received twice), accounted (1: the
# dumps hold exactly the messages the ledger calls sent or unknown).
check() {
    local dir=$1
    shift
    (cd "$dir" && status_json >"$dir/status.json")
    python3 - "$dir" "$CODE" "$@" <<'PY'
import json, sys, glob, collections, os
d, code, *expect = sys.argv[1:]
status = json.load(open(f"{d}/status.json"))["segments"]
got = {k: sum(s[k] for s in status) for k in ("sent", "failed", "deferred", "unknown", "pending")}
got["code"] = int(code)
rcpts = collections.Counter()
for dump in glob.glob(f"{d}/dumps/dump-*"):
    for line in open(dump, errors="replace"):
        if line.startswith("X-Rcpt-Args: <"):
            rcpts[line.split("<", 1)[1].split(">", 1)[0]] += 1
got["received"] = sum(rcpts.values())
got["once"] = int(all(c == 1 for c in rcpts.values()))
# Every message the sinks got is one the ledger calls sent, or unknown (the reply was lost).
got["accounted"] = int(got["received"] == got["sent"] + got["unknown"])
report = json.load(open(f"{d}/run/report.json")) if os.path.exists(f"{d}/run/report.json") else None
if report:
    got["stop"] = report["stop"]["kind"]
    out = json.load(open(f"{d}/out.json")) if os.path.getsize(f"{d}/out.json") else None
    # What the process says it did agrees with the report it wrote.
    if out and out["session"] != report["session"]:
        print(f"session counts differ: stdout {out['session']} report {report['session']}"); sys.exit(1)
bad = []
for e in expect:
    k, v = e.split("=", 1)
    if str(got.get(k)) != v:
        bad.append(f"{k}: expected {v}, got {got.get(k)}")
if bad:
    print("; ".join(bad), "| all:", got, "| stderr:", open(f"{d}/err.txt").read().strip()[-400:])
    sys.exit(1)
PY
}

PASSED=0
FAILED=0
# case NAME: runs the function case_NAME in a fresh directory and counts the result.
case_() {
    local name=$1 dir="$TOP/$1"
    mkdir -p "$dir"
    # Not in an `if`: there bash ignores `set -e` inside the case, and only its last command
    # would count.
    local rc=0
    set +e
    # However it ends, its sinks are killed and its postfix instance stopped.
    (set -e; trap 'kill_sinks; stop_all_postfix' EXIT; "case_$name" "$dir") >"$dir/case.log" 2>&1
    rc=$?
    set -e
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
        echo "ok   $name"
    else
        FAILED=$((FAILED + 1))
        echo "FAIL $name ($dir): $(tail -n 3 "$dir/case.log")"
    fi
}

# The healthy re-run that every fault case ends with: the rest is sent, nobody twice.
rerun_healthy() {
    local dir=$1
    shift 2
    start_sink "$dir"
    # A halted case left the halt marker: the operator "fixed" the relay, so clears it.
    send "$dir" "$PORT" --clear-halt
    check "$dir" code=0 pending=0 deferred=0 once=1 accounted=1 "$@"
}

case_healthy() {
    new_run "$1" 30
    start_sink "$1"
    send "$1" "$PORT" --concurrency 2
    check "$1" code=0 sent=30 received=30 once=1 stop=finished
    # Greeted with this machine's full name or the sender's domain, never localhost.
    grep -h '^X-Helo-Args:' "$1"/dumps/dump-* | sort -u | grep -qv 'localhost'
}

case_soft_reject_at_rcpt() { # 450 at every RCPT: all deferred, nothing received
    new_run "$1" 30
    start_sink "$1" -r RCPT
    send "$1" "$PORT" --concurrency 2 --max-attempts 2
    check "$1" code=5 sent=0 failed=0 deferred=30 received=0
    rerun_healthy "$1" 30 sent=30 received=30
}

case_hard_reject_at_rcpt() { # 500 5.3.0 at every RCPT: the relay's fault, the breaker halts
    new_run "$1" 30
    start_sink "$1" -f RCPT
    send "$1" "$PORT" --concurrency 1 --halt-after 5
    check "$1" code=6 failed=0 deferred=5 pending=25 received=0 stop=relay_failing
    rerun_healthy "$1" 30 sent=30 received=30
}

case_sequence_error_at_data() { # 503 at DATA: never a donor's failure
    new_run "$1" 20
    start_sink "$1" -f DATA -B '503 5.5.1 Error: bad sequence of commands'
    send "$1" "$PORT" --concurrency 1 --halt-after 5
    check "$1" code=6 failed=0 deferred=5 received=0 stop=relay_failing
    rerun_healthy "$1" 20 sent=20 received=20
}

case_abort_after_data() { # 550 after the DATA reply, before the body is read
    new_run "$1" 20
    start_sink "$1" -A 0
    send "$1" "$PORT" --concurrency 1 --halt-after 5
    check "$1" code=6 failed=0 deferred=5 received=0 stop=relay_failing
    rerun_healthy "$1" 20 sent=20 received=20
}

case_421_at_rcpt() { # 421 and disconnect at RCPT: deferred, each reconnect after a pause
    new_run "$1" 3
    start_sink "$1" -Q RCPT
    send "$1" "$PORT" --concurrency 1 --max-attempts 1
    check "$1" code=5 failed=0 deferred=3 received=0
    rerun_healthy "$1" 3 sent=3 received=3
}

case_421_at_mail() {
    new_run "$1" 3
    start_sink "$1" -Q MAIL
    send "$1" "$PORT" --concurrency 1 --max-attempts 1
    check "$1" code=5 failed=0 deferred=3 received=0
    rerun_healthy "$1" 3 sent=3 received=3
}

case_drop_after_the_dot() { # the body arrives, the reply never does: unknown; the breaker halts
    new_run "$1" 30
    start_sink "$1" -q .
    send "$1" "$PORT" --concurrency 1 --halt-after 5
    check "$1" code=6 unknown=5 failed=0 pending=25 stop=relay_failing
    # The unknown ones are skipped, not resent: everyone else arrives once.
    rerun_healthy "$1" 30 sent=25 unknown=5 received=30
}

case_server_exits_mid_run() { # the sink stops after 10 messages (a relay crash)
    new_run "$1" 30
    start_sink "$1" -M 10
    send "$1" "$PORT" --concurrency 1 --halt-after 5
    # The tenth may be sent or unknown (the sink may exit before its reply); then the
    # connections are refused, and the breaker halts after five of them.
    check "$1" code=6 failed=0 received=10 once=1 accounted=1 deferred=5 stop=relay_failing
    rerun_healthy "$1" 30 received=30
}

case_no_esmtp() { # EHLO refused: greeted with HELO, sent without extensions
    new_run "$1" 10
    start_sink "$1" -e
    send "$1" "$PORT" --concurrency 2
    check "$1" code=0 sent=10 received=10 once=1
    grep -q "greeted with HELO" "$1/err.txt"
}

case_no_pipelining() {
    new_run "$1" 20
    start_sink "$1" -p
    send "$1" "$PORT" --concurrency 2
    check "$1" code=0 sent=20 received=20 once=1
}

case_no_enhanced_codes_bounce() { # 550 without an enhanced code at RCPT: the address's
    new_run "$1" 10
    start_sink "$1" -E -f RCPT -B '550 No such user here'
    send "$1" "$PORT" --concurrency 1
    check "$1" code=0 failed=10 received=0 stop=finished
    [[ $(grep -c '@example.org' "$1/run/suppress-bounced.txt") == 10 ]]
}

case_slow_replies() { # a second before every RCPT reply: slower, nothing lost
    new_run "$1" 4
    # Without PIPELINING: smtp-sink answers a pipelined DATA with 503 while it waits.
    start_sink "$1" -p -W RCPT:1
    send "$1" "$PORT" --concurrency 2
    check "$1" code=0 sent=4 received=4 once=1
}

# dkim_key DIR NAME ALGORITHM: a private key DIR/NAME.pem (mode 600) and the TXT record
# to publish for it in DIR/NAME.txt.
dkim_key() {
    local dir=$1 name=$2
    case $3 in
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$name.pem" 2>/dev/null
        printf 'v=DKIM1; k=rsa; p=%s' "$(openssl pkey -in "$dir/$name.pem" -pubout -outform DER | base64 -w0)" >"$dir/$name.txt" ;;
    ed25519) openssl genpkey -algorithm ed25519 -out "$dir/$name.pem"
        # The record holds the bare 32-byte key, the end of the SubjectPublicKeyInfo.
        printf 'v=DKIM1; k=ed25519; p=%s' "$(openssl pkey -in "$dir/$name.pem" -pubout -outform DER | tail -c 32 | base64 -w0)" >"$dir/$name.txt" ;;
    rsa1024) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$dir/$name.pem" 2>/dev/null ;;
    esac
    chmod 600 "$dir/$name.pem"
}

dkim_table() { printf '[[dkim]]\ndomain = "park.example"\nselector = "%s"\nprivate_key_file = "%s.pem"\n' "$1" "$1"; }

# dkim_case DIR SIGS SELECTOR...: a run signed with these keys (made beforehand), a text and
# HTML message whose text ends in whitespace-only lines, sent to a healthy sink; every
# signature on every message received verifies with dkimpy.
dkim_case() {
    local dir=$1 sigs=$2 tables="" keys=()
    shift 2
    for s in "$@"; do
        tables+=$(dkim_table "$s")$'\n'
        keys+=("$s=$dir/$s.txt")
    done
    EXTRA_TOML=$tables new_run "$dir" 20
    printf 'Dear {{ name }},\nthank you.\n  \n\t\n\n' >"$dir/templates/all/body.txt"
    printf '<p>Dear {{ name }}, thank you.</p>\n' >"$dir/templates/all/body.html"
    start_sink "$dir"
    send "$dir" "$PORT" --concurrency 2
    check "$dir" code=0 sent=20 received=20 once=1
    "$PY" tests/system/dkim_verify.py "$dir/dumps" "$sigs" "${keys[@]}"
}

case_dkim_rsa() { dkim_key "$1" rsa1 rsa; dkim_case "$1" 1 rsa1; }
case_dkim_ed25519() { dkim_key "$1" ed1 ed25519; dkim_case "$1" 1 ed1; }
case_dkim_rsa_and_ed25519() {
    dkim_key "$1" rsa1 rsa
    dkim_key "$1" ed1 ed25519
    dkim_case "$1" 2 rsa1 ed1
}

case_dkim_bad_keys_send_nothing() { # a short RSA key, or one others can read: refused (exit 2), nothing sent
    dkim_key "$1" short rsa1024
    EXTRA_TOML=$(dkim_table short) new_run "$1" 3
    start_sink "$1"
    send "$1" "$PORT"
    check "$1" code=2 received=0 sent=0
    grep -q "receivers want at least 2048 bits" "$1/err.txt"
    dkim_key "$1" short rsa
    chmod 644 "$1/short.pem"
    send "$1" "$PORT"
    check "$1" code=2 received=0 sent=0
    grep -q "can be read by other users (mode 0644)" "$1/err.txt"
}

case_postfix_dsn() { # a real postfix accepts, bounces (5.1.1) and returns DSNs; `bounces` reads them
    local n=6 pfx=$1/postfix
    start_postfix "$pfx"
    MESSAGE_TOML='return_path = "bounces+{{ key }}@park.example"' new_run "$1" "$n"
    send "$1" "$PORT" --concurrency 2
    check "$1" code=0 sent=$n failed=0 deferred=0 unknown=0 pending=0 stop=finished
    wait_for_dsns "$pfx" "$n"
    (cd "$1" && "$BIN" bounces "$pfx/mail/bounces.mbox" --out bounced.txt --run run --json >bounces.json)
    (cd "$1" && status_json >status.json && cp bounced.txt bounced1.txt)
    # Read twice (a cron job re-reading the mailbox): nobody listed or counted twice.
    (cd "$1" && "$BIN" bounces "$pfx/mail/bounces.mbox" --out bounced.txt --run run --json >bounces2.json)
    (cd "$1" && status_json >status2.json)
    python3 - "$1" "$n" "$pfx/mail/bounces.mbox" "$PFX_MYHOSTNAME" <<'PY'
import json, mailbox, re, sys
d, n, mbox, host = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
donors = sorted(f"d{i}@example.org" for i in range(n))
# The DSNs are postfix's own: one per donor, each to the VERP address of its message.
finals = []
for m in mailbox.mbox(mbox):
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    raw = m.as_string()
    assert f"Reporting-MTA: dns; {host}" in raw and "X-Postfix-Queue-ID: " in raw, raw[:2000]
    assert re.search(r"^Status: 5\.1\.1$", raw, re.M), raw[:2000]
    finals += re.findall(r"^Final-Recipient: rfc822; ?(\S+)$", raw, re.M)
    key = re.fullmatch(r"bounces\+([0-9a-f]{32})@park\.example", m["X-Original-To"]).group(1)
    # The returned message is the one sent with this key in its return path.
    assert f"Message-ID: <faults-2026.{key}@park.example>" in raw, raw
assert sorted(finals) == donors, finals
def listed(name):
    return sorted(l.strip() for l in open(f"{d}/{name}") if l.strip() and not l.startswith("#"))
assert listed("bounced1.txt") == donors, listed("bounced1.txt")
out = json.load(open(f"{d}/bounces.json"))
r, a = out["read"], out["applied"]
assert (r["messages"], r["permanent"], r["unrecognised"]) == (n, n, []), r
assert a["recorded"] == n, a
status = json.load(open(f"{d}/status.json"))["segments"]
assert sum(s["bounced_later"] for s in status) == n, status
again = json.load(open(f"{d}/bounces2.json"))["applied"]
assert (again["added"], again["already_listed"]) == (0, n), again
assert listed("bounced.txt") == donors, listed("bounced.txt")
status = json.load(open(f"{d}/status2.json"))["segments"]
assert sum(s["bounced_later"] for s in status) == n, status
PY
    # Stopped, nothing of it left (case_ would stop it too, without this check).
    stop_postfix "$pfx/etc"
    [[ -z $(pfx_procs "$pfx/spool") ]]
}

case_takeover_from_another_host() { # a shard on "another host" (its own boot id) killed, then taken over
    [[ $(id -u) == 0 ]] || { echo "needs root for unshare -m and a bind mount"; return 1; }
    new_run "$1" 200
    # A second before every RCPT reply: the send is mid-run when it is killed.
    start_sink "$1" -W RCPT:1
    local fake="$1/boot_id"
    echo 0b7e4d6c-2a40-4d4f-9d7e-6f1e2b3c4d5e >"$fake"
    (cd "$1" && CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$PORT" \
        CAMPAIGN_UNSUBSCRIBE_SECRET=faults-secret-0123456789abcdef \
        exec unshare -m bash -c 'mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$1" send run --shard 0/1 --concurrency 2 --quiet' \
        "$fake" "$BIN" >"$1/other.out" 2>&1) &
    local other=$!
    sleep 4
    kill -9 "$other"
    wait "$other" 2>/dev/null || true
    # The dead host's reservations cannot be judged by its page cache: each is unknown, at
    # most a batch (32) per connection, and none is sent again.
    start_sink "$1"
    send "$1" "$PORT"
    check "$1" code=0 pending=0 deferred=0 once=1
    python3 - "$1" <<'PY'
import collections, glob, json, sys
d = sys.argv[1]
status = json.load(open(f"{d}/status.json"))["segments"]
got = {k: sum(s[k] for s in status) for k in ("sent", "unknown")}
received = sum(1 for f in glob.glob(f"{d}/dumps/dump-*") for l in open(f, errors="replace")
               if l.startswith("X-Rcpt-Args: <"))
assert 1 <= got["unknown"] <= 2 * 32, got
# Every message received is sent or unknown; an unknown one may never have left.
assert got["sent"] <= received <= got["sent"] + got["unknown"], (got, received)
assert got["sent"] + got["unknown"] == 200, got
PY
}

# chunking_case DIR N CHUNKING TRANSFER [SEND FLAGS...]: N donors sent to a real postfix
# smtpd offering CHUNKING or not (on/off), which refuses d3@example.org at RCPT (5.1.1) and
# delivers the rest to discard(8). Checks the ledger (N-1 sent, d3 failed and suppressed),
# that each other donor was delivered exactly once and d3 never, that smtpd saw every
# transaction by TRANSFER (bdat or data) and none the other way, and that a re-run sends
# nothing.
chunking_case() {
    local dir=$1 n=$2 chunking=$3 transfer=$4 pfx=$1/postfix
    shift 4
    echo "$pfx/etc" >>"$TOP/postfix-instances"
    mkdir -p "$pfx/etc"
    printf 'd3@example.org 550 5.1.1 No such user here\n' >"$pfx/etc/refuse"
    discard_postfix_start "$pfx" deliver "$chunking"
    new_run "$dir" "$n"
    send "$dir" "$PFX_PORT" --concurrency 2 "$@"
    check "$dir" code=0 sent=$((n - 1)) failed=1 deferred=0 unknown=0 pending=0 stop=finished
    grep -qx 'd3@example.org' "$dir/run/suppress-bounced.txt"
    discard_postfix_drained "$pfx"
    send "$dir" "$PFX_PORT" --concurrency 2 "$@"
    check "$dir" code=0 sent=$((n - 1)) failed=1 pending=0
    discard_postfix_drained "$pfx"
    python3 - "$pfx/maillog" "$n" "$transfer" <<'PY'
import collections, re, sys
log, n, transfer = open(sys.argv[1]).read(), int(sys.argv[2]), sys.argv[3]
other = "data" if transfer == "bdat" else "bdat"
delivered = collections.Counter(re.findall(r" to=<([^>]+)>, relay=none, .* status=sent ", log))
want = {f"d{i}@example.org": 1 for i in range(n) if i != 3}
assert delivered == want, f"delivered {dict(delivered)}"
assert len(re.findall(r"NOQUEUE: reject: RCPT from .*<d3@example.org>: Recipient address rejected", log)) == 1
# smtpd's per-session command counts, "bdat=29" or "bdat=0/1" (accepted/all) when one failed.
used = collections.Counter()
for line in re.findall(r"disconnect from \S+ (.*)", log):
    for cmd, ok, total in re.findall(r"\b(\w+)=(\d+)(?:/(\d+))?", line):
        used[cmd] += int(total or ok)
assert used[transfer] == n and used[other] == 0, f"smtpd counted {dict(used)}"
PY
}

case_postfix_chunking() { # real smtpd offers CHUNKING: BDAT for every message, each donor once
    chunking_case "$1" 30 on bdat
    # check --smtp says how it will send.
    (cd "$1" && CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$PFX_PORT" "$BIN" check campaign.toml --smtp >check.txt)
    grep -q "offers: .*CHUNKING" "$1/check.txt"
    grep -q "sends: MAIL, RCPT and BDAT with the message in one write" "$1/check.txt"
}

case_postfix_chunking_off() { # [smtp] chunking = false: DATA although smtpd offers CHUNKING
    EXTRA_TOML=$'[smtp]\nchunking = false' chunking_case "$1" 12 on data
}

case_postfix_chunking_hidden() { # smtpd without CHUNKING (smtpd_discard_ehlo_keywords): DATA
    chunking_case "$1" 12 off data
}

for c in ${CASES:-healthy soft_reject_at_rcpt hard_reject_at_rcpt sequence_error_at_data \
    abort_after_data 421_at_rcpt 421_at_mail drop_after_the_dot server_exits_mid_run \
    no_esmtp no_pipelining no_enhanced_codes_bounce slow_replies \
    dkim_rsa dkim_ed25519 dkim_rsa_and_ed25519 dkim_bad_keys_send_nothing postfix_dsn \
    takeover_from_another_host postfix_chunking postfix_chunking_off postfix_chunking_hidden}; do
    case_ "$c"
done
echo
echo "faults: $PASSED passed, $FAILED failed"
((FAILED == 0))
