"""Verifies every DKIM signature in smtp-sink dump files with dkimpy, an implementation
independent of the one that signed them. The public keys come from the command line, not DNS.

    python3 dkim_verify.py DUMP_DIR SIGS SELECTOR=KEYFILE...

KEYFILE holds the DNS TXT value to publish (v=DKIM1; k=...; p=...). SIGS is the number of
signatures every message must carry. Prints "verified N/M signatures on K messages" and
exits 1 unless all verify.
"""
import glob
import sys

import dkim

dump_dir, want, *keys = sys.argv[1:]
records = {}
for k in keys:
    selector, path = k.split("=", 1)
    records[f"{selector}._domainkey.park.example."] = open(path, "rb").read().strip()


def dns(name, timeout=5):
    return records.get(name.decode() if isinstance(name, bytes) else name, b"")


messages = []
for dump in sorted(glob.glob(f"{dump_dir}/dump-*")):
    current = None
    for line in open(dump, "rb"):
        # smtp-sink starts every transaction with its -S line or these headers of its own.
        if line == b"From sink\n":
            current = None
            continue
        if line.startswith(b"X-Client-Addr:") or current is None:
            current = []
            messages.append(current)
        current.append(line.rstrip(b"\n") + b"\r\n")
ok = total = 0
bad = []
for lines in messages:
    msg = b"".join(lines)
    sigs = sum(1 for l in lines if l.lower().startswith(b"dkim-signature:"))
    if sigs != int(want):
        bad.append(f"a message carries {sigs} signatures, not {want}")
    d = dkim.DKIM(msg)
    for i in range(sigs):
        total += 1
        try:
            verified = d.verify(idx=i, dnsfunc=dns)
        except dkim.DKIMException as e:
            verified, why = False, str(e)
        else:
            why = "dkimpy says no"
        if verified:
            ok += 1
        else:
            bad.append(f"signature {i} failed: {why}")
print(f"verified {ok}/{total} signatures on {len(messages)} messages")
if bad or not messages:
    print("; ".join(bad[:5]) or "no messages", file=sys.stderr)
    sys.exit(1)
