#!/usr/bin/env bash
# One campaign run sent by GNU parallel over ssh: 16 shards spread over the hosts, 2 at a time
# on each (4 in all with 2 hosts), each retried up to 3 tries, then the whole run's report.
# tests/system/scale.sh runs this very script (HOSTS=:, this machine) while a killer
# SIGKILLs its sends.
#
#   bash gnu-parallel.sh [SEND FLAGS...]    # e.g. --concurrency 4 --rate 5/s
#
# Settings, from the environment:
#   RUN_DIR        the run directory (made by `campaign segment`), at the same path on every
#                  host, on storage whose flock locks reach every host (NFSv4, CephFS, Lustre
#                  with -o flock: storage.md)
#   SHARDS         how many shards (16): more than run at once, so a slow shard holds up
#                  only 1/16 of the run (storage.md, over-sharding)
#   HOSTS          parallel's -S list (host1,host2); ":" is this machine
#   JOBS_PER_HOST  shards at once on each host (2); --rate is per process, so give each the
#                  provider's limit / (hosts x JOBS_PER_HOST)
#   JOBLOG         parallel's job log, one line per shard: its host, runtime, Exitval
#   CAMPAIGN       the campaign binary (campaign: on each host's PATH)
# Every host needs ssh without a password from here, and the campaign binary. Secrets stay
# in files on the hosts: [smtp] password_file in the campaign file, and
# CAMPAIGN_UNSUBSCRIBE_SECRET_FILE (a path; --env below passes the path, not the secret).
#
# Exit codes: --retries retries every failed try alike (parallel cannot tell them apart),
# which is right for 5 (work left), 7 (a lock held: the same shard still running, say after
# ssh lost a host that goes on sending) and 137 (killed). The others come back the same way
# and cost nothing: 8 (unknown outcomes) never resends an unknown donor, 6 (halted) stops at
# the halt marker RUN/ledger/halt at once (fix the relay, then send once with --clear-halt),
# 2 (configuration refused) at once too. The job log's Exitval column tells them apart
# afterwards: 0 done; 8 look at RUN/unknown.csv; 6 or 2 fix and run this again;
# 5 or 7 run this again (`--resume-failed` with the same job log reruns only those).
set -uo pipefail # no -e: parallel's exit code is read, not fatal

RUN_DIR=${RUN_DIR:-/shared/campaign/runs/spring}
SHARDS=${SHARDS:-16}
HOSTS=${HOSTS:-host1,host2}
JOBS_PER_HOST=${JOBS_PER_HOST:-2}
JOBLOG=${JOBLOG:-$RUN_DIR.parallel-joblog}
CAMPAIGN=${CAMPAIGN:-campaign}

# The command each try runs, through the shell on its host: the run directory and the flags
# quoted once here, the shard number {} filled in by parallel.
printf -v cmd '%q send %q --shard {}/%d --lock-wait 60s' "$CAMPAIGN" "$RUN_DIR" "$SHARDS"
if (($# > 0)); then printf -v extra ' %q' "$@"; cmd+=$extra; fi

# --retries 3: three tries per shard, on another host than the one it failed on when there is one.
# --termseq: when parallel is stopped (Ctrl-C, SIGTERM), one TERM and three minutes for the
#   messages in flight before KILL; its default sends TERM again within a second, which
#   campaign takes as "quit at once".
# --env: these variables go to the remote hosts too (ssh passes no environment).
# --tagstring/--line-buffer: every output line says which shard it is from.
# shellcheck disable=SC2046 # the shard numbers, one word each
parallel --retries 3 --joblog "$JOBLOG" -S "$HOSTS" -j "$JOBS_PER_HOST" \
    --termseq TERM,180000,KILL,25 \
    --env CAMPAIGN_SMTP_URL --env CAMPAIGN_UNSUBSCRIBE_SECRET_FILE \
    --tagstring 'shard {}' --line-buffer \
    "$cmd" ::: $(seq 0 $((SHARDS - 1))) </dev/null
failed=$? # how many shards failed all their tries (101: more than 100)

# The whole run's report.json, failed.csv and unknown.csv, from every shard's ledger. A shard
# that exited 0 can still have unknown donors, left by a try that was killed: unknown.csv
# lists them all.
"$CAMPAIGN" report "$RUN_DIR"
report=$?
echo "gnu-parallel.sh: $failed shard(s) failed all their tries (see $JOBLOG); campaign report exited $report"
if ((failed > 0)); then exit 1; fi
exit "$report"
