# shellcheck shell=bash
# A throwaway postfix instance on 127.0.0.1 that takes mail for anyone from loopback and
# delivers it nowhere: for tests/system/chunking.sh and bench/chunking.sh (sourced; needs root,
# postfix installed, and `free_port`). Everything lives in one directory, by default on tmpfs
# so the queue's fsyncs do not make the disk the thing measured:
#
#   DIR/etc/      main.cf, master.cf, refuse (recipients refused at RCPT)   (config_directory)
#   DIR/spool/    queue_directory         DIR/data/  data_directory
#   DIR/maillog   postfix's own log (there may be no syslog)
#
#   discard_postfix_start DIR MODE [CHUNKING]   sets PFX_PORT; MODE is
#       deliver  queue each message and hand it to discard(8), which logs one
#                "status=sent" line per recipient (for counting who arrived, and how often)
#       drop     smtpd's DISCARD action at the end of each message: accepted with a 250,
#                never queued (for benchmarks: no queue manager competing for the CPU)
#     CHUNKING is "on" (default: smtpd offers it, as postfix has since 3.4) or "off"
#     (smtpd_discard_ehlo_keywords hides it).
#   discard_postfix_stop DIR                    stops it and waits until its processes are gone
#
# Every transport is discard: there is no smtp(8), lmtp or local(8) in master.cf, so nothing
# can leave the machine. smtpd logs each session's commands when it ends ("disconnect from
# ... ehlo=1 mail=3 rcpt=3 bdat=3 quit=1"), which is how a test sees BDAT was used. No change is
# made to /etc/postfix.

# write_master_cf, run_postfix, stop_postfix and pfx_procs come from the instance helper of
# faults.sh.
source "$(dirname "${BASH_SOURCE[0]}")/postfix.sh"

discard_postfix_start() {
    local dir=$1 mode=$2 chunking=${3:-on} etc=$1/etc end_of_data discard_keywords
    if [[ $(id -u) != 0 ]]; then
        echo "discard_postfix_start: a postfix instance needs root" >&2
        return 1
    fi
    case $mode in
    deliver) end_of_data= ;;
    drop) end_of_data="check_client_access static:DISCARD" ;;
    *) echo "discard_postfix_start: MODE is deliver or drop, not $mode" >&2; return 1 ;;
    esac
    case $chunking in
    on) discard_keywords= ;;
    off) discard_keywords=chunking ;;
    *) echo "discard_postfix_start: CHUNKING is on or off, not $chunking" >&2; return 1 ;;
    esac
    PFX_PORT=$(free_port)
    mkdir -p "$etc" "$dir/spool" "$dir/data"
    # The postfix user must reach its data directory (a mktemp directory is 700).
    chmod 755 "$dir"
    touch "$etc/refuse"
    cat >"$etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/spool
data_directory = $dir/data
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
myhostname = discard-mta.park.example
mydomain = park.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = check_recipient_access texthash:$etc/refuse, permit_mynetworks, reject
smtpd_end_of_data_restrictions = $end_of_data
smtpd_discard_ehlo_keywords = $discard_keywords
default_transport = discard:this instance delivers nowhere
relay_transport = \$default_transport
local_transport = \$default_transport
smtp_dns_support_level = disabled
# A benchmark sends faster than a queue drains; no pause per message for it.
in_flow_delay = 0
smtpd_client_connection_count_limit = 0
biff = no
EOF
    write_master_cf "$etc" "$PFX_PORT" "discard   unix - - n - - discard"
    run_postfix "$dir" "$PFX_PORT"
}

discard_postfix_stop() {
    stop_postfix "$1/etc"
}

# discard_postfix_drained DIR: waits (30 s at most) until the instance's queue is empty, so
# every message accepted has been handed to discard(8) and logged.
discard_postfix_drained() {
    local dir=$1 queued
    for _ in $(seq 300); do
        queued=$(find "$dir/spool/incoming" "$dir/spool/active" "$dir/spool/deferred" \
            "$dir/spool/maildrop" -type f 2>/dev/null | wc -l)
        ((queued == 0)) && return 0
        sleep 0.1
    done
    echo "after 30 s $queued messages are still queued; queue and log:" >&2
    postqueue -c "$dir/etc" -p >&2 || true
    tail -n 30 "$dir/maillog" >&2 || true
    return 1
}
