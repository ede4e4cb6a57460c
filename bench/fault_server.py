#!/usr/bin/env python3
"""A programmable loopback SMTP server for bench/faults.sh, on aiosmtpd (PyPI).

It discards every message. With --throttle-every N (N > 0) the first RCPT of every donor whose
row index in --donors (0-based, file order) is N-1 modulo N (for 300 donors and N = 50: rows
49, 99, ..., 299, six donors) is answered

    421 4.7.0 Try again later, closing connection

and the connection is closed (nothing else is written on it, like a real MTA shedding load).
That donor's later RCPTs, and every other RCPT, get 250. --throttle-every 0 is a healthy server.

It offers PIPELINING (aiosmtpd reads commands one by one in order, so pipelined MAIL, RCPT
and DATA are answered in order) as smtp-sink does, so campaign pipelines as it would there.

At SIGTERM or SIGINT it stops listening and writes a JSON object to --stats:

    accepted         messages accepted (one per RCPT in an accepted DATA)
    rcpt_421         RCPTs answered 421
    connections      connections opened
    throttle_set     donors chosen for the 421
    throttled_seen   of those, how many got it
    duplicates       donors accepted more than once, {address: times}
    missing          donors from --donors never accepted
    unexpected       accepted recipients not in --donors

Usage: fault_server.py --port P --donors CSV --stats FILE [--throttle-every N]
Listens on 127.0.0.1 only.
"""

import argparse
import asyncio
import csv
import json
import os
import signal
import sys
from collections import Counter

from aiosmtpd.smtp import SMTP

REPLY_421 = "421 4.7.0 Try again later, closing connection"


class Counts:
    def __init__(self, donors, throttle):
        self.donors = donors
        self.throttle = throttle
        self.accepted = Counter()
        self.unexpected = Counter()
        self.rcpt_421 = 0
        self.connections = 0
        self.throttled_seen = set()
        self.donor_set = set(donors)

    def report(self):
        return {
            "accepted": sum(self.accepted.values()) + sum(self.unexpected.values()),
            "rcpt_421": self.rcpt_421,
            "connections": self.connections,
            "throttle_set": len(self.throttle),
            "throttled_seen": len(self.throttled_seen),
            "duplicates": {a: n for a, n in self.accepted.items() if n > 1},
            "missing": [a for a in self.donors if a not in self.accepted],
            "unexpected": dict(self.unexpected),
        }


class Handler:
    def __init__(self, counts):
        self.counts = counts

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        # responses ends with "250 HELP"; offer PIPELINING before it.
        return responses[:-1] + ["250-PIPELINING"] + responses[-1:]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        c = self.counts
        key = address.lower()
        if key in c.throttle and key not in c.throttled_seen:
            c.throttled_seen.add(key)
            c.rcpt_421 += 1
            return REPLY_421
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        c = self.counts
        for rcpt in envelope.rcpt_tos:
            key = rcpt.lower()
            if key in c.donor_set:
                c.accepted[key] += 1
            else:
                c.unexpected[key] += 1
        return "250 2.0.0 OK: discarded"


class FaultSMTP(SMTP):
    """Closes the connection after any 421 it sends, and writes nothing after it (commands
    the client pipelined behind the refused RCPT go unanswered)."""

    _closing = False

    def connection_made(self, transport):
        self.event_handler.counts.connections += 1  # no STARTTLS here: one call per connection
        super().connection_made(transport)

    async def push(self, status):
        if self._closing:
            return
        await super().push(status)
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        if text.startswith("421"):
            self._closing = True
            if self.transport is not None:
                self.transport.close()


def read_donors(path):
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        i = next(r).index("email")
        return [row[i].strip().lower() for row in r]


async def serve(args):
    donors = read_donors(args.donors)
    n = args.throttle_every
    throttle = {a for k, a in enumerate(donors) if n > 0 and k % n == n - 1}
    counts = Counts(donors, throttle)
    handler = Handler(counts)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: FaultSMTP(handler, hostname="fault-server.invalid", ident="fault_server"),
        host="127.0.0.1",
        port=args.port,
        backlog=256,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    report = counts.report()
    with open(args.stats + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    os.replace(args.stats + ".tmp", args.stats)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--donors", required=True, help="the donor CSV (an `email` column)")
    p.add_argument("--stats", required=True, help="where to write the counts at exit")
    p.add_argument("--throttle-every", type=int, default=0)
    args = p.parse_args()
    if args.throttle_every < 0:
        sys.exit("--throttle-every must be >= 0")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
