#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that delays each direction by a fixed time, for bench/chunking.sh.

    delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS

Every connection to 127.0.0.1:LISTEN_PORT gets its own connection to 127.0.0.1:TARGET_PORT.
Bytes read from one side at time t are written to the other at t + DELAY_MS, in the order they
were read (one FIFO per direction), so a round trip through it takes 2 x DELAY_MS more than
without it, and bandwidth is not limited. An end of stream is passed on after the same delay.
Runs until killed.

Threads, not asyncio: time.sleep is precise to about a tenth of a millisecond here, where
asyncio's timers round up to whole milliseconds (a 5 ms delay would become 5-6 ms). Both
sockets have TCP_NODELAY, so the proxy adds no Nagle wait of its own, and every read is
acknowledged at once (TCP_QUICKACK), as a wire would: the proxy ends both TCP connections, and
its kernel's delayed ACK would otherwise stall a sender that waits for it (postfix smtpd's last
reply to a BDAT transaction waited 40 ms for it, every message; see BENCHMARKS.md).
"""

import collections
import socket
import sys
import threading
import time


def pump(src, dst, delay):
    """Copies src to dst, each chunk written `delay` seconds after it was read."""
    queue = collections.deque()
    ready = threading.Condition()

    def read():
        while True:
            try:
                data = src.recv(65536)
                # The kernel leaves quick-ACK mode by itself; asked again after every read.
                src.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                data = b""
            with ready:
                queue.append((time.monotonic() + delay, data))
                ready.notify()
            if not data:
                return

    def write():
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    threads = [threading.Thread(target=f, daemon=True) for f in (read, write)]
    for t in threads:
        t.start()
    return threads


def serve(conn, target_port, delay):
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port))
    except OSError:
        conn.close()
        return
    for s in (conn, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threads = pump(conn, upstream, delay) + pump(upstream, conn, delay)
    for t in threads:
        t.join()
    conn.close()
    upstream.close()


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    listen_port, target_port, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", listen_port))
    listener.listen(256)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, target_port, delay_ms / 1000), daemon=True).start()


if __name__ == "__main__":
    main()
