#!/usr/bin/env bash
# The scale lane: the deployment examples in docs/deploy/ checked with real tools, and
# `campaign send --shard` run by real schedulers against postfix's smtp-sink, with kills.
#
#   kubernetes  docs/deploy/kubernetes-job.yaml against the schemas of Kubernetes 1.31 and
#               1.37 (kubernetes-validate --strict, offline, from PyPI into a venv), a copy
#               with a misspelt field that must fail, and the rules the schema does not hold
#               (the exit codes' actions, restartPolicy, the index in the args, the secrets)
#   nomad       docs/deploy/nomad-job.hcl parsed as HCL2 (python-hcl2) and its job read back;
#               Nomad itself is not packaged for Debian, so its own validation is not run
#   shell       bash -n and shellcheck of the shell examples and of this script
#   container   the Containerfile's COPY sources exist (no container engine here to build it)
#   cron        the crontab line of docs/deploy/cron-hosts.md run as cron would run it
#   slurm       a real single-node Slurm (slurmctld, slurmd, munged from Debian) running
#               docs/deploy/slurm-array.sh: an array of 8 shards of a 400-donor run, two
#               running tasks SIGKILLed (scancel --signal=KILL --batch) and submitted again,
#               a third sent USR1 as near its time limit (it stops, exits 5, is requeued);
#               a refused configuration (exit 2) cancelling the pending tasks; and a last
#               pass submitted the way the doc says (the array, then the report after it)
#               while a plain send holds the run's lock: every task exits 7 and is requeued,
#               then completes once the lock is gone
#   parallel    docs/deploy/gnu-parallel.sh (GNU parallel, --retries 3 --joblog) sending 4
#               shards of a 240-donor run while a killer SIGKILLs random `campaign send`s
# Both sending cases end with the same check, from the sink's dumps, the ledger (status), and
# `campaign report`'s unknown.csv: nobody received twice, every donor sent or listed unknown,
# nothing pending, and unknown <= kills x 2 (two connections per process).
#
#   bash tests/system/scale.sh          # installs what is missing (apt, and PyPI into a venv)
#   KEEP=1 bash tests/system/scale.sh   # keep the temp dir (logs, dumps, the Slurm state)
#   CASES="slurm" bash tests/system/scale.sh   # only these cases
#
# Runs as root on a fresh Debian 12 machine (CI). Only 127.0.0.1 is contacted; Slurm,
# munged and the sinks are started here on free loopback ports and stopped when this ends,
# however it ends. Every wait is bounded. Ends with "scale: N passed, M failed" and exits
# non-zero if any case failed; a scheduler that cannot start is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# The daemons (slurmctld, slurmd, munged, smtp-sink) are in sbin, not always on PATH.
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
T0=$SECONDS
note() { printf '[%3ds] %s\n' $((SECONDS - T0)) "$*"; }

# --- What the cases need -------------------------------------------------------------------
APT_UPDATED=
apt_install() {
    if [[ -z $APT_UPDATED ]]; then
        apt-get update -qq >/dev/null || true
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
need=()
if ! command -v smtp-sink >/dev/null && [[ ! -x /usr/sbin/smtp-sink ]]; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    need+=(postfix)
fi
command -v ss >/dev/null || need+=(iproute2)
command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
command -v parallel >/dev/null || need+=(parallel)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v flock >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
    note "installing with apt: ${need[*]}"
    apt_install "${need[@]}"
fi
SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)

cargo build --locked --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/campaign

# `campaign status run --json` in the current directory: exit 0 (complete), 5 (donors left)
# or 6 (halted) are answers; anything else is a failure.
status_json() {
    local rc=0
    "$BIN" status run --json || rc=$?
    case $rc in 0 | 5 | 6) ;; *) echo "campaign status exited $rc" >&2; return 1 ;; esac
}

TOP=$(mktemp -d /tmp/campaign-scale.XXXXXX)
# smtp-sink runs as nobody when started by root: it must reach the case directories.
chmod 755 "$TOP"
SL=$TOP/slurm
PIDFILE=$TOP/pids
: >"$PIDFILE"

# --- Processes: every one started here is stopped, however the script ends -----------------
sl() { SLURM_CONF=$SL/slurm.conf "$@"; }

slurm_down() {
    [[ -f $SL/slurm.conf ]] || return 0
    local i p
    if [[ -f $SL/slurmctld.pid ]] && kill -0 "$(cat "$SL/slurmctld.pid")" 2>/dev/null; then
        # Jobs first: a job step outlives slurmd.
        sl scancel --user="$(id -un)" 2>/dev/null || true
        for i in $(seq 40); do
            [[ -z $(sl squeue -h -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
        sl scontrol shutdown >/dev/null 2>&1 || true
    fi
    for p in slurmctld slurmd; do
        [[ -f $SL/$p.pid ]] || continue
        local pid
        pid=$(cat "$SL/$p.pid")
        for i in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$SL/$p.pid"
    done
    if [[ -S $SL/sock/munge.sock ]]; then
        munged --socket="$SL/sock/munge.sock" --stop >/dev/null 2>&1 || true
    fi
    if [[ -f $SL/munge/munged.pid ]]; then
        kill -KILL "$(cat "$SL/munge/munged.pid")" 2>/dev/null || true
        rm -f "$SL/munge/munged.pid"
    fi
}

# kill_listed: the processes this script recorded (sinks, lock holders, runners).
kill_listed() {
    local p
    while read -r p; do kill "$p" 2>/dev/null || true; done <"$PIDFILE"
    sleep 0.2
    while read -r p; do kill -KILL "$p" 2>/dev/null || true; done <"$PIDFILE"
    : >"$PIDFILE"
}

# leftovers: processes started from here that are still alive: their command line names a
# path under $TOP, or their environment our Slurm's configuration (a job, slurmstepd).
leftovers() {
    local p cmd env
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $p == "$$" || $p == "$BASHPID" ]] && continue
        cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
        env=$(tr '\0' '\n' 2>/dev/null <"/proc/$p/environ") || env=
        if [[ $cmd == *"$TOP"* ]] || grep -qxF "SLURM_CONF=$SL/slurm.conf" <<<"$env"; then
            echo "$p $cmd"
        fi
    done
}

cleanup() {
    local rc=$? left
    trap - EXIT INT TERM
    kill_listed
    slurm_down
    left=$(leftovers)
    if [[ -n $left ]]; then
        echo "scale: processes left running, killed now:" >&2
        echo "$left" >&2
        awk '{print $1}' <<<"$left" | while read -r p; do kill -KILL "$p" 2>/dev/null || true; done
        rc=1
    fi
    if [[ -n ${KEEP:-} ]]; then echo "scale: kept $TOP" >&2; else rm -rf "$TOP"; fi
    exit "$rc"
}
trap cleanup EXIT
# A signal stops the running case first (it stops what it started), then cleanup runs.
CASE_PID=
on_signal() {
    if [[ -n $CASE_PID ]]; then
        kill -TERM "$CASE_PID" 2>/dev/null || true
        wait "$CASE_PID" 2>/dev/null || true
    fi
    exit 130
}
trap on_signal INT TERM

# A venv for the PyPI tools (pinned; the venv module from Debian's python3-venv if the
# python3 on PATH has none).
VENV=$TOP/venv
make_venv() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null && "$py" -m venv "$VENV" >/dev/null 2>&1; then return 0; fi
        rm -rf "$VENV"
    done
    note "installing python3-venv with apt"
    apt_install python3-venv
    /usr/bin/python3 -m venv "$VENV"
}
note "PyPI: kubernetes-validate and python-hcl2 into $VENV"
make_venv
"$VENV/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0 python-hcl2==8.1.4
PY=$VENV/bin/python

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_sink DIR [FLAGS...]: a sink on a free port appending every message to DIR/dumps/;
# sets PORT.
start_sink() {
    local dir=$1 user=()
    shift
    [[ $(id -u) == 0 ]] && user=(-u nobody)
    PORT=$(free_port)
    mkdir -p "$dir/dumps" && chmod 777 "$dir/dumps"
    "$SINK" "${user[@]}" -D "$dir/dumps/dump-" -S 'From sink\n' "$@" "127.0.0.1:$PORT" 256 2>>"$dir/sink.err" &
    echo $! >>"$PIDFILE"
    for _ in $(seq 100); do
        ss -Hltn "sport = :$PORT" | grep -q . && return 0
        sleep 0.05
    done
    echo "smtp-sink did not start" >&2
    return 1
}

# new_run DIR N: a campaign, its templates and N donors, segmented in chunks of 10 into
# DIR/run, and an unsubscribe secret file DIR/unsubscribe-secret (mode 600).
new_run() {
    local dir=$1 n=$2
    mkdir -p "$dir/templates/all"
    cat >"$dir/campaign.toml" <<'TOML'
[campaign]
id = "scale-2026"
[message]
from = "Friends of the Park <appeal@park.example>"
unsubscribe_url = "https://park.example/u?t={{ unsubscribe_token }}"
[[segment]]
name = "all"
TOML
    printf 'Hello {{ name }}\n' >"$dir/templates/all/subject.txt"
    printf 'Dear {{ name }},\nthank you.\n' >"$dir/templates/all/body.txt"
    { echo "email,name"; for ((i = 0; i < n; i++)); do echo "d$i@example.org,Donor $i"; done; } >"$dir/donors.csv"
    (cd "$dir" && "$BIN" segment donors.csv --campaign campaign.toml --out run --as-of 2026-11-29 --chunk-size 10 >/dev/null)
    (umask 077 && printf 'scale-secret-0123456789abcdef\n' >"$dir/unsubscribe-secret")
}

# verify DIR DONORS KILLS: the ledger, `campaign report` and the sink's dumps agree; nobody
# received twice; every donor sent or listed unknown; unknown <= KILLS x 2.
verify() {
    local dir=$1
    (cd "$dir" && status_json >status.json)
    local rc=0
    (cd "$dir" && "$BIN" report run --json >report-out.json 2>report-err.txt) || rc=$?
    if ((rc != 0)); then
        echo "campaign report exited $rc: $(cat "$dir/report-err.txt")"
        return 1
    fi
    "$PY" - "$@" <<'PY'
import collections, csv, glob, json, sys
d, donors, kills = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per_process = 2  # --concurrency 2: at most one unknown per connection of a killed process
status = json.load(open(f"{d}/status.json"))["segments"]
t = {k: sum(s[k] for s in status) for k in ("donors", "sent", "failed", "deferred", "unknown", "pending")}
bad = []
if t["donors"] != donors: bad.append(f"{t['donors']} donors in the run, not {donors}")
for k in ("pending", "deferred", "failed"):
    if t[k]: bad.append(f"{t[k]} {k}")
if t["sent"] + t["unknown"] != donors: bad.append(f"sent + unknown = {t['sent'] + t['unknown']}, not {donors}")
# The dumps: one record per message the sink got, "From sink" first. Every record counts for
# "twice", complete or not; Message-IDs only of complete ones (the body's last line is there).
rcpts, mids = collections.Counter(), collections.Counter()
for path in glob.glob(f"{d}/dumps/dump-*"):
    for rec in open(path, errors="replace").read().split("From sink\n")[1:]:
        lines = rec.splitlines()
        for l in lines:
            if l.startswith("X-Rcpt-Args: <"):
                rcpts[l.split("<", 1)[1].split(">", 1)[0]] += 1
        mid = [l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("message-id:")]
        if mid and "thank you." in lines:
            mids[mid[0]] += 1
twice = sorted(a for a, n in rcpts.items() if n > 1)
if twice: bad.append(f"received twice: {twice[:10]}")
dup_ids = sorted(m for m, n in mids.items() if n > 1)
if dup_ids: bad.append(f"Message-IDs twice: {dup_ids[:5]}")
everyone = {f"d{i}@example.org" for i in range(donors)}
if set(rcpts) - everyone: bad.append(f"strangers received: {sorted(set(rcpts) - everyone)[:5]}")
# unknown.csv, written by `campaign report`: one row per unknown donor.
with open(f"{d}/run/unknown.csv", newline="") as f:
    unknown = [row["email"] for row in csv.DictReader(f)]
if len(unknown) != t["unknown"] or len(set(unknown)) != len(unknown):
    bad.append(f"unknown.csv lists {len(unknown)} rows, the ledger {t['unknown']} unknown")
missing = sorted(everyone - set(rcpts) - set(unknown))
if missing: bad.append(f"neither received nor listed unknown: {missing[:10]} ({len(missing)})")
if t["unknown"] > kills * per_process:
    bad.append(f"{t['unknown']} unknown after {kills} kills (at most {kills * per_process})")
report = json.load(open(f"{d}/run/report.json"))
rt = {k: sum(s[k] for s in report["segments"]) for k in ("sent", "unknown")}
if rt != {"sent": t["sent"], "unknown": t["unknown"]}: bad.append(f"report.json {rt} differs from status {t}")
print(f"{donors} donors: sent {t['sent']}, unknown {t['unknown']} (at most {kills} kills x {per_process}), "
      f"received {sum(rcpts.values())} messages by {len(rcpts)} donors, nobody twice: {not twice}")
if bad:
    print("FAILED: " + "; ".join(bad))
    sys.exit(1)
PY
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every half second; fails after SECONDS.
wait_until() {
    local secs=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + secs))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            echo "timed out after ${secs}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

PASSED=0
FAILED=0
# case_ NAME: runs case_NAME in a fresh directory, in a subshell that stops what it started
# when it ends, fails or is sent SIGTERM. In the background, so that this shell's `wait`
# (unlike a foreground command) lets a signal through at once.
case_() {
    local name=$1 dir="$TOP/$1" rc=0 t=$SECONDS
    mkdir -p "$dir"
    (
        set -e
        trap 'kill_listed; slurm_down' EXIT
        trap 'exit 143' TERM
        "case_$name" "$dir"
    ) >"$dir/case.log" 2>&1 &
    CASE_PID=$!
    wait "$CASE_PID" || rc=$?
    CASE_PID=
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
        note "ok   $name ($((SECONDS - t))s): $(tail -n 1 "$dir/case.log")"
    else
        FAILED=$((FAILED + 1))
        note "FAIL $name ($((SECONDS - t))s), last lines of $dir/case.log:"
        tail -n 25 "$dir/case.log" | sed 's/^/    /'
        if [[ $name == slurm ]]; then
            tail -n 8 "$SL/slurmctld.log" "$SL/slurmd.log" 2>/dev/null | sed 's/^/    /' || true
        fi
    fi
}

# --- The manifests and scripts ----------------------------------------------------------

case_kubernetes() {
    local d=$1 f=docs/deploy/kubernetes-job.yaml v
    "$VENV/bin/kubernetes-validate" --version
    for v in 1.31.0 1.37.0; do
        "$VENV/bin/kubernetes-validate" --strict -k "$v" "$f"
    done
    # The validator is alive: a misspelt field fails it.
    sed 's/^  parallelism: 4$/  paralelism: 4/' "$f" >"$d/misspelt.yaml"
    if "$VENV/bin/kubernetes-validate" --strict -k 1.31.0 "$d/misspelt.yaml" >"$d/misspelt.out" 2>&1; then
        echo "a misspelt field passed kubernetes-validate"; return 1
    fi
    grep -q "paralelism" "$d/misspelt.out"
    # What the API server checks and the schema does not, and what the doc promises.
    "$PY" - "$f" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"]: d for d in docs}
assert set(kinds) == {"PersistentVolumeClaim", "Secret", "Job"}, kinds.keys()
pvc, job = kinds["PersistentVolumeClaim"], kinds["Job"]
assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
s = job["spec"]
assert (s["completionMode"], s["completions"], s["parallelism"]) == ("Indexed", 16, 4), s
assert s["backoffLimitPerIndex"] >= 1 and 0 < s["maxFailedIndexes"] <= s["completions"]
assert s.get("podReplacementPolicy") == "Failed"
pod = s["template"]["spec"]
assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
assert pod["terminationGracePeriodSeconds"] >= 180
assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
names = {c["name"] for c in pod["containers"]}
actions = {}
for r in s["podFailurePolicy"]["rules"]:
    assert r["action"] in {"FailJob", "FailIndex", "Ignore", "Count"}, r
    if "onExitCodes" in r:
        e = r["onExitCodes"]
        assert e["containerName"] in names and e["operator"] == "In", e
        vals = e["values"]
        assert vals == sorted(set(vals)) and 0 not in vals and all(0 < v < 256 for v in vals), vals
        for v in vals:
            actions.setdefault(v, r["action"])
    else:
        conds = [(c["type"], c["status"]) for c in r["onPodConditions"]]
        actions.setdefault(conds[0][0], r["action"])
want = {2: "FailJob", 6: "FailJob", 8: "FailIndex", 5: "Count", 7: "Count", 137: "Count", "DisruptionTarget": "Ignore"}
assert all(actions.get(k) == v for k, v in want.items()), actions
send = next(c for c in pod["containers"] if c["name"] == "send")
args = send["args"]
assert args[:2] == ["send", "/runs/spring"] and "$(JOB_COMPLETION_INDEX)/16" in args, args
assert args[args.index("--lock-wait") + 1] == "60s"
env = {e["name"]: e for e in send["env"]}
assert env["CAMPAIGN_SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == kinds["Secret"]["metadata"]["name"]
secret_file = env["CAMPAIGN_UNSUBSCRIBE_SECRET_FILE"]["value"]
mounts = {m["mountPath"]: m["name"] for m in send["volumeMounts"]}
assert mounts["/runs"] in {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
assert any(secret_file.startswith(p + "/") for p in mounts), (secret_file, mounts)
print("kubernetes-job.yaml: valid for 1.31.0 and 1.37.0 (strict); exit codes", want)
PY
}

case_nomad() {
    "$PY" - docs/deploy/nomad-job.hcl <<'PY'
import sys, hcl2
doc = hcl2.load(open(sys.argv[1]))
def s(v): return v.strip('"') if isinstance(v, str) else v
(job_name, job), = doc["job"][0].items()
assert s(job["type"]) == "batch", job["type"]
(group_name, group), = job["group"][0].items()
assert group["count"] == 16
assert s(group["restart"][0]["mode"]) == "fail" and group["reschedule"][0]
(task_name, task), = group["task"][0].items()
args = [s(a) for a in task["config"][0]["args"]]
assert args[0] == "send" and "${NOMAD_ALLOC_INDEX}/16" in args and "--lock-wait" in args, args
assert {s(v["destination"]) for v in task["template"]} >= {"${NOMAD_SECRETS_DIR}/unsubscribe-secret"}
env = task["env"][0]
assert s(env["CAMPAIGN_UNSUBSCRIBE_SECRET_FILE"]) == "${NOMAD_SECRETS_DIR}/unsubscribe-secret"
vol = list(group["volume"][0].values())[0]
assert s(task["volume_mount"][0]["volume"]) == list(group["volume"][0])[0].strip('"')
print(f"nomad-job.hcl: HCL2 parses (python-hcl2); job {job_name} batch, group {group_name} count 16, "
      f"task {task_name}: {' '.join(args)} (not checked by Nomad itself: not packaged here)")
PY
}

case_shell() {
    local f
    for f in docs/deploy/slurm-array.sh docs/deploy/gnu-parallel.sh tests/system/scale.sh; do
        bash -n "$f"
    done
    shellcheck --version | sed -n 2p
    shellcheck -S warning docs/deploy/slurm-array.sh docs/deploy/gnu-parallel.sh tests/system/scale.sh
    # The crontab lines of cron-hosts.md: what cron hands to the shell ("\%" is "%").
    sed -n '/^```crontab$/,/^```$/p' docs/deploy/cron-hosts.md | grep -E '^[0-9*]' |
        sed -E 's/^(\S+\s+){5}//; s/\\%/%/g' >"$1/cron-commands.sh"
    [[ $(wc -l <"$1/cron-commands.sh") == 2 ]]
    bash -n "$1/cron-commands.sh"
    echo "bash -n and shellcheck -S warning: slurm-array.sh, gnu-parallel.sh, scale.sh, the crontab lines"
}

case_container() {
    # No container engine here (and no registry to pull the base images from): the file is
    # read, not built. Each COPY source from the build context exists.
    local src
    grep -E '^FROM ' docs/deploy/Containerfile
    while read -r src; do
        [[ -e $src ]] || { echo "Containerfile copies $src, which does not exist"; return 1; }
    done < <(grep -E '^COPY ' docs/deploy/Containerfile | grep -v -- '--from=' | awk '{for (i = 2; i < NF; i++) print $i}')
    grep -qx 'USER 10001:10001' docs/deploy/Containerfile
    grep -qx 'ENTRYPOINT \["campaign"\]' docs/deploy/Containerfile
    echo "Containerfile: COPY sources exist, USER 10001, ENTRYPOINT campaign (not built: no container engine)"
}

case_cron() { # host mail1's line of cron-hosts.md, once, as cron runs it: shards 0 4 8 12 of 16
    local d=$1
    new_run "$d" 160
    start_sink "$d"
    mkdir -p "$d/bin" "$d/home"
    ln -s "$BIN" "$d/bin/campaign"
    local line
    # The command part of the */10 line, as cron hands it to the shell ("\%" is "%").
    line=$(sed -n '/^```crontab$/,/^```$/p' docs/deploy/cron-hosts.md | grep -E '^\*/10' | sed -E 's/^(\S+\s+){5}//; s/\\%/%/g')
    [[ -n $line ]]
    local shards
    shards=$(sed -n 's/^SHARDS_HERE="\(.*\)"$/\1/p' docs/deploy/cron-hosts.md)
    [[ $shards == "0 4 8 12" ]]
    # cron's environment: the crontab's variables, HOME and a PATH that finds campaign.
    env -i HOME="$d/home" PATH="$d/bin:/usr/bin:/bin" RUN="$d/run" SHARDS_HERE="$shards" \
        CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$PORT" CAMPAIGN_UNSUBSCRIBE_SECRET_FILE="$d/unsubscribe-secret" \
        bash -c "$line"
    cat "$d/home/campaign-spring.log"
    [[ $(grep -c 'exit 0$' "$d/home/campaign-spring.log") == 4 ]]
    (cd "$d" && status_json >status.json)
    # 160 donors in 16 chunks of 10: this host's four shards are 40 donors.
    "$PY" - "$d" <<'PY'
import json, sys
t = json.load(open(f"{sys.argv[1]}/status.json"))["segments"][0]
assert (t["sent"], t["pending"]) == (40, 120), t
print("the crontab line sent shards 0 4 8 12 of 16: 40 of 160 donors, each shard exit 0")
PY
}

# --- Slurm -----------------------------------------------------------------------------

# slurm_up: munged, slurmctld and slurmd, all under $SL, on free loopback ports, as root.
slurm_up() {
    local host cport dport
    host=$(hostname -s)
    mkdir -p "$SL"/{munge,sock,state,spool}
    chmod 755 "$SL" "$SL/sock"
    chmod 700 "$SL/munge"
    # munged checks permissions: the key and its directory private, the socket's directory
    # reachable by everyone.
    head -c 1024 /dev/urandom >"$SL/munge/munge.key"
    chmod 400 "$SL/munge/munge.key"
    munged --key-file="$SL/munge/munge.key" --socket="$SL/sock/munge.sock" \
        --pid-file="$SL/munge/munged.pid" --log-file="$SL/munge/munged.log" \
        --seed-file="$SL/munge/munged.seed" ||
        { echo "munged did not start:"; cat "$SL/munge/munged.log"; return 1; }
    cport=$(free_port)
    dport=$(free_port)
    while [[ $dport == "$cport" ]]; do dport=$(free_port); done
    # No cgroups, no accounting, no systemd: processes tracked by process group (so a
    # SIGKILL to the batch step reaches campaign too), root runs everything. CPUs=4 on a
    # 2-core machine (config_overrides: slurmd takes the file's word): the tasks wait on the
    # network, and four at a time keeps this case short.
    cat >"$SL/slurm.conf" <<EOF
ClusterName=scale
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$cport
SlurmdPort=$dport
AuthType=auth/munge
AuthInfo=socket=$SL/sock/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SL/state
SlurmdSpoolDir=$SL/spool
SlurmctldPidFile=$SL/slurmctld.pid
SlurmdPidFile=$SL/slurmd.pid
SlurmctldLogFile=$SL/slurmctld.log
SlurmdLogFile=$SL/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=10
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=4 RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    slurmctld -f "$SL/slurm.conf" || { echo "slurmctld did not start:"; tail -n 30 "$SL/slurmctld.log"; return 1; }
    slurmd -f "$SL/slurm.conf" -N "$host" || { echo "slurmd did not start:"; tail -n 30 "$SL/slurmd.log"; return 1; }
    node_idle() { [[ $(sl sinfo -h -N -o %t 2>/dev/null) == idle ]]; }
    if ! wait_until 60 "the node to be idle in sinfo" node_idle; then
        sl sinfo -N -l || true
        tail -n 20 "$SL/slurmctld.log" "$SL/slurmd.log"
        return 1
    fi
    sl sinfo -N
}

# batch_shell JOBID: the pid of the job's batch script (slurmd's copy of slurm-array.sh).
batch_shell() {
    local p want
    want=$(printf '/spool/job%05d/slurm_script' "$1")
    for p in /proc/[0-9]*; do
        if [[ $(tr '\0' ' ' 2>/dev/null <"$p/cmdline") == *"$want"* ]]; then
            echo "${p#/proc/}"
            return 0
        fi
    done
    echo "no batch script of job $1 running" >&2
    return 1
}
no_jobs() { [[ -z $(sl squeue -h -o %i) ]]; }
running_tasks() { (($(sl squeue -h -j "$1" -t R -o %i | wc -l) >= $2)); }
# The exit lines of slurm-array.sh in the logs of job $1 (file name pattern).
exits() { cat "$1"/campaign-send-"$2"_*.out 2>/dev/null | grep -o 'exit [0-9]*' || true; }
job_field() { sl scontrol show job "$1" | grep -o "$2=[^ ]*" | head -n 1 | cut -d= -f2; }

case_slurm() {
    local d=$1 a1 a2 v idx out array report
    slurm_up
    sl sbatch --version
    new_run "$d" 400
    # A second before each reply to the end of a message: a process killed is almost always
    # waiting for one (one unknown per connection), and a shard of 50 takes about 25 s.
    start_sink "$d" -W .:1
    mkdir -p "$d/logs"
    export CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$PORT" RUN_DIR="$d/run" SHARDS=8 LOCK_WAIT=30s CAMPAIGN="$BIN"
    # submit SBATCH-FLAGS...: the doc's script as an array, each task with --concurrency 2.
    submit() { sl sbatch --parsable --output="$d/logs/campaign-send-%A_%a.out" "$@" docs/deploy/slurm-array.sh --concurrency 2; }

    note "a refused configuration (exit 2): the tasks fail, the pending ones are cancelled"
    cp "$d/unsubscribe-secret" "$d/readable-secret"
    chmod 644 "$d/readable-secret"
    a1=$(CAMPAIGN_UNSUBSCRIBE_SECRET_FILE="$d/readable-secret" submit --array=0-7)
    a1=${a1%%;*}
    wait_until 60 "the refused array to end" no_jobs
    exits "$d/logs" "$a1" | sort | uniq -c
    [[ -z $(exits "$d/logs" "$a1" | grep -v 'exit 2$') ]]
    grep -q "cancelling the array's pending tasks" "$d"/logs/campaign-send-"$a1"_*.out
    grep -q "can be read by other users" "$d"/logs/campaign-send-"$a1"_*.out
    echo "states: $(sl squeue -h -t all -j "$a1" -o %T 2>/dev/null | sort | uniq -c | xargs)"
    [[ -z $(cat "$d"/dumps/dump-* 2>/dev/null) ]]

    export CAMPAIGN_UNSUBSCRIBE_SECRET_FILE="$d/unsubscribe-secret"
    note "an array of 8 shards; two running tasks SIGKILLed, then submitted again"
    a1=$(submit --array=0-7)
    a1=${a1%%;*}
    wait_until 60 "two tasks of $a1 running" running_tasks "$a1" 2
    sleep 4
    mapfile -t victims < <(sl squeue -h -j "$a1" -t R -o %i | head -n 2)
    ((${#victims[@]} == 2))
    for v in "${victims[@]}"; do sl scancel --signal=KILL --batch "$v"; done
    gone() { [[ -z $(sl squeue -h -j "$1" -o %i 2>/dev/null) ]]; }
    local idxs=()
    for v in "${victims[@]}"; do
        wait_until 30 "task $v to end" gone "$v"
        # Killed by signal 9 (ExitCode=0:9), before slurm-array.sh could say how it ended.
        [[ $(job_field "$v" ExitCode) == 0:9 ]]
        idx=${v#*_}
        out=$d/logs/campaign-send-${a1}_$idx.out
        grep -q "starting" "$out"
        if grep "exit [0-9]" "$out"; then echo "task $v was not killed before it ended"; return 1; fi
        idxs+=("$idx")
    done
    note "killed ${victims[*]} (signal 9); submitting shards ${idxs[*]} again"
    a2=$(submit --array="${idxs[0]},${idxs[1]}")
    a2=${a2%%;*}

    # What --signal=B:USR1@300 does near the time limit: USR1 to the batch script alone,
    # which asks campaign to stop after the messages in flight; exit 5, requeued.
    local task job shell
    read -r task job < <(sl squeue -h -j "$a1" -t R -o '%i %A' | head -n 1)
    [[ -n $task ]]
    shell=$(batch_shell "$job")
    note "USR1 to the batch script of $task (pid $shell), as near its time limit"
    kill -USR1 "$shell"
    out=$d/logs/campaign-send-${a1}_${task#*_}.out
    requeued() { grep -q 'exit 5 .*requeued' "$out"; }
    wait_until 30 "$task to exit 5 and be requeued" requeued
    grep -h "time limit near" "$out"
    pending() { [[ $(sl squeue -h -j "$task" -o %T) == PENDING ]]; }
    wait_until 30 "$task to be pending again" pending
    sl scontrol update JobId="$task" StartTime=now

    wait_until 150 "every task of $a1 and $a2 to end" no_jobs
    exits "$d/logs" "$a1" | sort | uniq -c
    exits "$d/logs" "$a2" | sort | uniq -c
    # The six not killed (one of them after its requeue), and the two again: each shard
    # complete.
    [[ $(exits "$d/logs" "$a1" | grep -c 'exit 0$') == 6 ]]
    [[ $(exits "$d/logs" "$a1" | grep -c 'exit 5$') == 1 ]]
    [[ $(exits "$d/logs" "$a2" | grep -c 'exit 0$') == 2 ]]

    note "the last pass, as the doc submits it, while a plain send holds the run's lock"
    "$PY" -c '
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
time.sleep(900)' "$d/run/ledger/lock" "$d/locked" &
    local holder=$!
    echo "$holder" >>"$PIDFILE"
    wait_until 10 "the lock holder" test -e "$d/locked"
    out=$(LOG_DIR=$d/logs AT_ONCE=8 LOCK_WAIT=1s SLURM_CONF=$SL/slurm.conf bash docs/deploy/slurm-array.sh --concurrency 2)
    echo "$out"
    array=$(sed -n 's/^submitted: shards \([0-9]*\), report \([0-9]*\)$/\1/p' <<<"$out")
    report=$(sed -n 's/^submitted: shards \([0-9]*\), report \([0-9]*\)$/\2/p' <<<"$out")
    [[ -n $array && -n $report ]]
    # Tasks, not lines: a task whose two-minute hold ran out before the last task started
    # runs again and appends a second requeue line, so a count of lines can jump past 8.
    all_requeued() { (($(grep -l 'exit 7 .*requeued' "$d"/logs/campaign-send-"$array"_*.out 2>/dev/null | wc -l) == 8)); }
    # Eight task starts, each refused after --lock-wait 1s, then requeued. Slurm may start
    # the next tasks only at its next scheduling pass, so this has taken from under a minute
    # to over two; the holder outlives the wait (it is killed below), or the tasks would find
    # the lock free and send.
    wait_until 300 "the 8 tasks to exit 7 and be requeued" all_requeued
    sl squeue -j "$array,$report" -o '%i %T %r'
    [[ $(sl squeue -h -j "$report" -o %r) == Dependency ]]
    kill "$holder"
    wait "$holder" 2>/dev/null || true
    # Slurm holds a requeued job about two minutes (its BeginTime); not worth waiting here.
    sl scontrol update JobId="$array" StartTime=now
    wait_until 90 "the requeued tasks and the report to end" no_jobs
    exits "$d/logs" "$array" | sort | uniq -c
    [[ $(exits "$d/logs" "$array" | grep -cE 'exit (0|8)$') == 8 ]]
    [[ $(job_field "${array}_0" Restarts) -ge 1 ]]
    [[ $(job_field "$report" ExitCode) == 0:0 ]]
    grep -h "wrote" "$d"/logs/campaign-report-"$report".out
    verify "$d" 400 2
}

# --- GNU parallel ------------------------------------------------------------------------

# descendants PID: every process below PID.
descendants() {
    local all
    all=$(ps -e -o pid=,ppid=)
    local queue=("$1") p c
    while ((${#queue[@]})); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        for c in $(awk -v p="$p" '$2 == p {print $1}' <<<"$all"); do
            echo "$c"
            queue+=("$c")
        done
    done
}

case_parallel() {
    local d=$1 runner shard kills=0 deadline p cmd v
    parallel --version | head -n 1
    new_run "$d" 240
    start_sink "$d" -W .:1
    export CAMPAIGN_SMTP_URL="smtp://127.0.0.1:$PORT" CAMPAIGN_UNSUBSCRIBE_SECRET_FILE="$d/unsubscribe-secret"
    RUN_DIR=$d/run SHARDS=4 HOSTS=: JOBS_PER_HOST=4 JOBLOG=$d/joblog CAMPAIGN=$BIN \
        bash docs/deploy/gnu-parallel.sh --concurrency 2 >"$d/parallel.out" 2>&1 &
    runner=$!
    echo "$runner" >>"$PIDFILE"
    # The killer: every 2 to 4 s, SIGKILL one running `campaign send`, at most 2 per shard
    # (a shard has 3 tries), 4 in all, for 60 s at most.
    RANDOM=4242
    declare -A per_shard=()
    deadline=$((SECONDS + 60))
    sleep 2
    while ((kills < 4 && SECONDS < deadline)) && kill -0 "$runner" 2>/dev/null; do
        sleep "$((2 + RANDOM % 3))"
        local victims=()
        for p in $(descendants "$runner"); do
            [[ $(cat "/proc/$p/comm" 2>/dev/null) == campaign ]] || continue
            cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
            [[ $cmd == *" send "* ]] || continue
            shard=$(grep -o -- '--shard [0-9]*' <<<"$cmd" | awk '{print $2}')
            ((${per_shard[$shard]:-0} < 2)) && victims+=("$p:$shard")
        done
        ((${#victims[@]})) || continue
        v=${victims[RANDOM % ${#victims[@]}]}
        if kill -KILL "${v%%:*}" 2>/dev/null; then
            kills=$((kills + 1))
            per_shard[${v#*:}]=$((${per_shard[${v#*:}]:-0} + 1))
            note "killed pid ${v%%:*} (shard ${v#*:}/4)"
        fi
    done
    local rc=0
    runner_done() { ! kill -0 "$runner" 2>/dev/null; }
    wait_until 120 "gnu-parallel.sh to end" runner_done || kill "$runner" 2>/dev/null || true
    wait "$runner" || rc=$?
    tail -n 12 "$d/parallel.out"
    cat "$d/joblog"
    ((rc == 0)) || { echo "gnu-parallel.sh exited $rc"; return 1; }
    ((kills >= 3)) || { echo "only $kills kills landed"; return 1; }
    # One line per shard, its last try: done.
    [[ $(awk 'NR > 1 && ($7 == 0 || $7 == 8) && $8 == 0' "$d/joblog" | wc -l) == 4 ]]
    verify "$d" 240 "$kills"
}

note "scale lane in $TOP"
# CASES="slurm parallel" runs only those (for debugging).
for c in ${CASES:-kubernetes nomad shell container cron slurm parallel}; do
    case_ "$c"
done
echo
echo "scale: $PASSED passed, $FAILED failed"
((FAILED == 0))
