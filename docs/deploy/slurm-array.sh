#!/usr/bin/env bash
# One campaign run sent by a Slurm job array: one array task per shard, 16 shards with at
# most 4 running at once (over-sharding: a slow shard holds up only 1/16 of the run, see
# storage.md), each task requeued when its shard has work left or finds its lock held, then
# a dependent job that writes the whole run's report once every task has ended.
# tests/system/scale.sh runs this very script on a real (single-node) Slurm: kills,
# requeues, a refused configuration and the report job.
#
#   bash slurm-array.sh [SEND FLAGS...]   # on a login node: submits the array, then the report
#   sbatch slurm-array.sh [SEND FLAGS...] # the array alone; run `campaign report RUN` after it
#
# SEND FLAGS are added to every `campaign send`, e.g. `--concurrency 4 --rate 5/s`. Settings,
# from the environment you submit from (sbatch passes it to the tasks):
#   RUN_DIR       the run directory, made by `campaign segment`, on storage every node mounts
#                 at the same path with flock locks that reach every node (NFSv4, CephFS,
#                 Lustre with -o flock: storage.md); `send --shard` refuses others
#   SHARDS        how many shards (16); keep it for the whole run: a task with another count
#                 is refused (exit 7) while any shard of this count runs
#   AT_ONCE       tasks running at once (4): the "%4" of --array; --rate is per process, so
#                 give each the provider's limit / AT_ONCE
#   LOCK_WAIT     how long a task waits for a lock another process holds (60s)
#   MAX_REQUEUES  requeues per task before it fails instead (20)
#   CAMPAIGN      the campaign binary (campaign, from PATH)
#   LOG_DIR       where the logs go, when submitted with `bash slurm-array.sh` (the current
#                 directory)
#
# Secrets never go in the environment you submit from: sbatch copies that environment into
# the job, and slurmctld keeps it in its state directory on disk. Point to files instead,
# readable only by the user who sends (mode 600), on storage the nodes mount:
#   [smtp] password_file = "smtp-password"             # in the campaign file
#   export CAMPAIGN_UNSUBSCRIBE_SECRET_FILE=/shared/campaign/secrets/unsubscribe-secret
#   export CAMPAIGN_SMTP_URL=smtp+starttls://relay.example.org:587   # not a secret
# Submitting with `bash slurm-array.sh` refuses CAMPAIGN_SMTP_PASSWORD and
# CAMPAIGN_UNSUBSCRIBE_SECRET in the environment for that reason.
#
# Exit codes of `campaign send`, and what each task does with them:
#   0    this shard is done                        -> the task completes
#   8    done, some outcomes unknown (unknown.csv) -> the task fails (exit 8), not retried:
#                                                    resending could mail those donors twice
#   5    work left: deferred donors, daily cap, --limit, stopped by a signal -> requeued
#   7    a lock is held: the same shard still running elsewhere (a task being cancelled, a
#        node that is not quite gone), another shard count, or a plain `send` -> requeued
#   137  campaign alone was killed (the OOM killer)  -> requeued; a crash leaves at most
#                                                    one unknown donor per connection
#   6    halted: the relay refused the sender or failed many donors alike; the halt marker
#        RUN/ledger/halt stops every shard -> the task fails, and the array's pending tasks
#        are cancelled (they would halt at once). Fix, then send with --clear-halt once
#   2    the configuration or the flags are refused -> likewise: fails, pending cancelled
#   1 and anything else                            -> the task fails
# A requeued task is held by Slurm for about two minutes before it may start again (its
# BeginTime), a back-off that suits 5 and 7. A node that fails takes the whole task with
# it; --requeue below lets Slurm requeue it. Whatever happens, nobody is mailed twice: the
# shards' ledgers and locks see to that, not Slurm.
#
# Stopping: `scancel` (or preemption, or the time limit) sends SIGTERM to campaign and to
# this script; campaign finishes the messages in flight, records them and exits 5. It gets
# KillWait seconds (slurm.conf, 30 by default) before SIGKILL; ask for 120 or more where
# replies can be slow. Near the time limit (--signal below) this script asks campaign to stop
# in good time itself, and the task is requeued to go on.
#
#SBATCH --job-name=campaign-send
#SBATCH --array=0-15%4
#SBATCH --requeue
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=12:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=campaign-send-%A_%a.out
# --cpus-per-task=1: sending waits on the network; the threads --concurrency starts are
#   cheap. --mem: campaign streams the run; 1G is generous.
# --signal=B:USR1@300: USR1 to this script alone five minutes before the time limit (not
#   TERM: Slurm's own TERM already reaches campaign, and a second TERM means "quit now").
# --open-mode=append: a requeued task adds to its log instead of replacing it.

set -uo pipefail # no -e: campaign's exit code is read, not fatal

RUN_DIR=${RUN_DIR:-/shared/campaign/runs/spring}
SHARDS=${SHARDS:-16}
AT_ONCE=${AT_ONCE:-4}
LOCK_WAIT=${LOCK_WAIT:-60s}
MAX_REQUEUES=${MAX_REQUEUES:-20}
CAMPAIGN=${CAMPAIGN:-campaign}
export RUN_DIR SHARDS AT_ONCE LOCK_WAIT MAX_REQUEUES CAMPAIGN

# Not inside a job: submit the array and, after it, the report.
submit() {
    local v log array report report_cmd
    for v in CAMPAIGN_SMTP_PASSWORD CAMPAIGN_UNSUBSCRIBE_SECRET; do
        if [[ -n ${!v:-} ]]; then
            echo "slurm-array.sh: refusing to submit with $v set: sbatch would store it with the job; use [smtp] password_file or CAMPAIGN_UNSUBSCRIBE_SECRET_FILE" >&2
            exit 2
        fi
    done
    if [[ ! -f $RUN_DIR/manifest.json ]]; then
        echo "slurm-array.sh: $RUN_DIR is not a run directory (no manifest.json); make it with campaign segment" >&2
        exit 2
    fi
    log=${LOG_DIR:-$PWD}
    # --array on the command line wins over the #SBATCH line: SHARDS and AT_ONCE decide.
    array=$(sbatch --parsable --array="0-$((SHARDS - 1))%$AT_ONCE" \
        --output="$log/campaign-send-%A_%a.out" "$0" "$@") || exit 1
    array=${array%%;*}
    # afterany: once every task has ended, whatever its state (a requeued task has not
    # ended); `campaign report` exits 7 while a send still runs on the run, so it tries again.
    # shellcheck disable=SC2016 # $code is the report job's, not ours
    printf -v report_cmd 'for try in 1 2 3 4 5; do %q report %q; code=$?; [ "$code" -ne 7 ] && exit "$code"; sleep 60; done; exit 7' \
        "$CAMPAIGN" "$RUN_DIR"
    report=$(sbatch --parsable --job-name=campaign-report --dependency="afterany:$array" \
        --kill-on-invalid-dep=yes --ntasks=1 --mem=1G --output="$log/campaign-report-%j.out" \
        --wrap "$report_cmd") || exit 1
    echo "submitted: shards $array, report ${report%%;*}"
}

if [[ -z ${SLURM_JOB_ID:-} ]]; then
    submit "$@"
    exit
fi

i=${SLURM_ARRAY_TASK_ID:?not an array task: submit with sbatch --array=0-$((SHARDS - 1))}
if ((i >= SHARDS)); then
    echo "campaign-send: array index $i is not a shard of $SHARDS: the --array range and SHARDS disagree" >&2
    exit 2
fi
restarts=${SLURM_RESTART_COUNT:-0}
tag="campaign-send: shard $i/$SHARDS (job $SLURM_JOB_ID, try $((restarts + 1)))"
echo "$tag: starting on $(hostname) at $(date -u +%FT%TZ)"

"$CAMPAIGN" send "$RUN_DIR" --shard "$i/$SHARDS" --lock-wait "$LOCK_WAIT" "$@" &
pid=$!
trap 'echo "$tag: time limit near: asking campaign to stop after the messages in flight"; kill -TERM "$pid" 2>/dev/null' USR1
trap 'echo "$tag: SIGTERM (scancel, preemption or the time limit): campaign got it too, waiting for it"' TERM
# A trapped signal interrupts `wait`; wait again until campaign itself has exited.
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
wait "$pid"
code=$?

requeue() {
    if ((restarts >= MAX_REQUEUES)); then
        echo "$tag: exit $code ($1) after $restarts requeues: giving up; look at the log above"
        exit "$code"
    fi
    echo "$tag: exit $code ($1): requeued"
    # Slurm ends this script itself once the task is requeued.
    if scontrol requeue "$SLURM_JOB_ID"; then exit 0; fi
    echo "$tag: scontrol requeue failed; submit shard $i again by hand"
    exit "$code"
}

stop_array() {
    echo "$tag: exit $code ($1): failed; cancelling the array's pending tasks, which would stop alike"
    scancel --state=PENDING "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}" || true
    exit "$code"
}

case $code in
0) echo "$tag: exit 0: shard complete" ;;
8) echo "$tag: exit 8: shard finished, but some outcomes are unknown: see $RUN_DIR/unknown.csv after campaign report; not retried (a resend could mail them twice)"
    exit 8 ;;
5) requeue "work left: deferred donors, daily cap, --limit or stopped by a signal" ;;
7) requeue "a lock is held by another send" ;;
137) requeue "campaign was killed" ;;
6) stop_array "halted: fix what the relay refused, then send once with --clear-halt" ;;
2) stop_array "configuration or flags refused" ;;
*) echo "$tag: exit $code: failed"
    exit "$code" ;;
esac
