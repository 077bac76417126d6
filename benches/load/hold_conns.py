#!/usr/bin/env python3
"""Memory probe for benches/load/run.sh: resident memory of a server idle, then with N idle
HTTP/1.1 keep-alive connections open (each has completed one request and stays open).

Usage: hold_conns.py PORT PATH N PID...   (PIDs whose VmRSS is summed; loopback only)
With HOLD_TLS=1 in the environment the connections speak TLS (the certificate is not verified).
Prints one line: RSS idle_kib=... held_kib=... open=... closed=...
"""

import os
import resource
import socket
import ssl
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


TLS = None
if os.environ.get("HOLD_TLS") == "1":
    TLS = ssl.create_default_context()
    TLS.check_hostname = False
    TLS.verify_mode = ssl.CERT_NONE


def one_request(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if TLS is not None:
        s = TLS.wrap_socket(s, server_hostname="localhost")
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {head[:60]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed mid-body")
        body += chunk
    return s


def main():
    port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    pids = [int(p) for p in sys.argv[4:]]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    idle = rss_kib(pids)
    conns = [one_request(port, path) for _ in range(n)]
    time.sleep(1.0)
    held = rss_kib(pids)
    # Still open? A closed connection reads as b"" at once; an open idle one would block.
    closed = 0
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
    for s in conns:
        s.close()
    print(f"RSS idle_kib={idle} held_kib={held} open={n - closed} closed={closed}")


if __name__ == "__main__":
    main()
