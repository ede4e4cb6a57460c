# shellcheck shell=bash
# A throwaway postfix instance for tests/system/faults.sh (sourced by it; needs root, and
# free_port and TOP from there). Everything lives in one directory:
#
#   DIR/etc/      main.cf, master.cf, aliases(.db), transport     (config_directory)
#   DIR/spool/    queue_directory (made by `postfix start`, owned as postfix wants)
#   DIR/data/     data_directory
#   DIR/mail/     bounces.mbox: the alias `bounces` delivers here (owned by default_privs)
#   DIR/maillog   postfix's own log (there may be no syslog), shown when something fails
#
# It listens on 127.0.0.1:PORT only and is the final destination for the sender's domain
# (park.example). Mail to the donors' domain (example.org) is accepted at RCPT and then
# bounced by the error(8) transport with 5.1.1, so postfix itself writes a DSN to the
# envelope sender; with recipient_delimiter = +, bounces+KEY@park.example goes to the alias
# `bounces`, a file. There is no smtp(8) in master.cf and default_transport is error too:
# nothing can leave the machine. No change is made to /etc/postfix (as root, `postfix -c`
# and `postqueue -c` need no alternate_config_directories entry).

PFX_MYHOSTNAME=faults-mta.park.example

# start_postfix DIR: starts the instance; sets PORT. Fails loudly (with the log) if postfix
# does not start or does not listen.
start_postfix() {
    local dir=$1 etc=$1/etc
    if [[ $(id -u) != 0 ]]; then
        echo "start_postfix: a postfix instance needs root (faults.sh runs as root in CI)" >&2
        return 1
    fi
    PORT=$(free_port)
    mkdir -p "$etc" "$dir/mail"
    # So that cleanup in faults.sh stops it even if the case is killed.
    echo "$etc" >>"$TOP/postfix-instances"
    cat >"$etc/main.cf" <<EOF
compatibility_level = 2
queue_directory = $dir/spool
data_directory = $dir/data
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
myhostname = $PFX_MYHOSTNAME
mydomain = park.example
myorigin = \$mydomain
mydestination = park.example, \$myhostname, localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.org
transport_maps = texthash:$etc/transport
# Accept at RCPT what the error transport will bounce (smtpd would otherwise reject such
# recipients itself, 550 5.1.1, and no DSN would be written).
smtpd_reject_unlisted_recipient = no
default_transport = error:5.7.1 this test instance delivers nowhere else
relay_transport = \$default_transport
recipient_delimiter = +
alias_maps = \$default_database_type:$etc/aliases
alias_database = \$default_database_type:$etc/aliases
smtp_dns_support_level = disabled
biff = no
EOF
    # No smtp/relay/lmtp/pickup/virtual.
    write_master_cf "$etc" "$PORT" \
        "error     unix - - n - - error" \
        "local     unix - n n - - local"
    printf 'example.org error:5.1.1 no such donor here\n' >"$etc/transport"
    printf 'bounces: %s\n' "$dir/mail/bounces.mbox" >"$etc/aliases"
    postalias -c "$etc" "$etc/aliases"
    # The alias database is root's, so local(8) writes the file as default_privs.
    chown "$(postconf -c "$etc" -h default_privs)" "$dir/mail"
    # postfix(1) works in the queue directory, so it must exist; set-permissions gives it,
    # its subdirectories (made by `start`) and the data directory the owners postfix wants.
    # postfix(1) reports to the maillog only when stderr is not a terminal.
    mkdir -p "$dir/spool" "$dir/data"
    run_postfix "$dir" "$PORT"
}

# write_master_cf ETC PORT [LINE...]: master.cf with smtpd on 127.0.0.1:PORT, the services
# every instance needs, and the instance's own LINEs (its transports). chroot n everywhere:
# no chroot to populate.
write_master_cf() {
    local etc=$1 port=$2
    shift 2
    {
        cat <<EOF
127.0.0.1:$port inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
retry     unix - - n - - error
anvil     unix - - n - 1 anvil
postlog   unix-dgram n - n - 1 postlogd
EOF
        printf '%s\n' "$@"
    } >"$etc/master.cf"
}

# run_postfix DIR PORT: starts the instance configured in DIR/etc and waits until it listens
# on 127.0.0.1:PORT; fails loudly, with its log, if it does not.
run_postfix() {
    local dir=$1 port=$2
    if ! postfix -c "$dir/etc" set-permissions || ! postfix -c "$dir/etc" start; then
        echo "postfix did not start; its log:" >&2
        tail -n 20 "$dir/maillog" >&2 || true
        return 1
    fi
    for _ in $(seq 100); do
        ss -Hltn "sport = :$port" | grep -q . && return 0
        sleep 0.05
    done
    echo "postfix started but does not listen on 127.0.0.1:$port; its log:" >&2
    tail -n 20 "$dir/maillog" >&2 || true
    return 1
}

# pfx_procs QUEUE_DIR: the pids of the processes whose working directory is QUEUE_DIR
# (every postfix daemon works in its queue directory).
pfx_procs() {
    # find fails on the processes it may not look at (pid 1 in some containers).
    { find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$1" 2>/dev/null || true; } | cut -d/ -f3
}

# stop_postfix ETC_DIR: stops that instance (if running) and waits (10 s at most) until its
# processes are gone, zombies reaped too; kills by pid any still running after that.
stop_postfix() {
    local etc=$1 spool pids left p master
    spool=$(postconf -c "$etc" -h queue_directory 2>/dev/null) || return 0
    [[ -d $spool ]] || return 0
    pids=$(pfx_procs "$spool")
    # Only if its master runs (else `stop` logs "not running" as a fatal error).
    master=$(tr -d ' ' <"$spool/pid/master.pid" 2>/dev/null) || true
    if [[ -n $master && $(readlink "/proc/$master/cwd" 2>/dev/null) == "$spool" ]]; then
        postfix -c "$etc" stop 2>/dev/null || true
    fi
    for _ in $(seq 200); do
        left=$(pfx_procs "$spool")
        for p in $pids; do [[ -e /proc/$p ]] && left+=" $p"; done
        [[ -z ${left// /} ]] && return 0
        sleep 0.05
    done
    left=$(pfx_procs "$spool")
    if [[ -n $left ]]; then
        echo "postfix processes left after stop: $left; killing them" >&2
        # shellcheck disable=SC2086
        kill -9 $left 2>/dev/null || true
    fi
}

# wait_for_dsns DIR N: flushes the queue until the mbox holds N messages from postfix's
# MAILER-DAEMON and the queue is empty, so the last one is written in full (30 s at most).
wait_for_dsns() {
    local dir=$1 n=$2 got=0 queued
    for i in $(seq 300); do
        got=$(grep -c '^From MAILER-DAEMON ' "$dir/mail/bounces.mbox" 2>/dev/null || true)
        queued=$(find "$dir/spool/maildrop" "$dir/spool/incoming" "$dir/spool/active" \
            "$dir/spool/deferred" -type f | wc -l)
        ((${got:-0} >= n && queued == 0)) && return 0
        if ((i % 20 == 0)); then postqueue -c "$dir/etc" -f 2>/dev/null || true; fi
        sleep 0.1
    done
    echo "after 30 s the mbox holds ${got:-0} of $n DSNs, $queued in the queue; queue and log:" >&2
    postqueue -c "$dir/etc" -p >&2 || true
    tail -n 30 "$dir/maillog" >&2 || true
    return 1
}

# stop_all_postfix: stops every instance start_postfix started under TOP (for cleanup).
stop_all_postfix() {
    local etc
    [[ -f $TOP/postfix-instances ]] || return 0
    while read -r etc; do stop_postfix "$etc"; done <"$TOP/postfix-instances"
}
