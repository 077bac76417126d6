#!/usr/bin/env python3
"""Memory under connection churn for benches/load/run.sh: resident memory of a server idle, then
while N short HTTP/1.1 keep-alive connections come and go, then idle again.

Usage: churn_conns.py PORT PATH N PID...   (PIDs whose VmRSS is summed; loopback only)
A warm-up of WARMUP connections comes first so that one-time allocations are done. Each
connection makes one keep-alive request, reads the whole answer and is closed by the client; at
most CONCURRENCY are open at once. RSS is sampled every 50 ms for the peak; after the last
connection the server idles ~3 s before the final sample. The run stops at DEADLINE seconds
(n then says how many connections were made). Progress goes to stderr; stdout gets one line:
CHURN start_kib=... peak_kib=... end_kib=... n=... errors=...
"""

import asyncio
import os
import sys
import threading
import time

from hold_conns import rss_kib

WARMUP = int(os.environ.get("CHURN_WARMUP", "300"))
CONCURRENCY = int(os.environ.get("CHURN_CONCURRENCY", "500"))
DEADLINE = float(os.environ.get("CHURN_DEADLINE", "300"))
TIMEOUT = 5.0


class Peak(threading.Thread):
    """Samples the summed RSS of the pids every 50 ms and keeps the highest."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.peak, self.done = pids, rss_kib(pids), threading.Event()

    def run(self):
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pids))


async def one_connection(port, request):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {head[:60]!r}")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def churn(port, path, n, deadline, progress=False):
    """Makes up to n connections, at most CONCURRENCY at once; returns (made, errors)."""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    next_index, made, errors = 0, 0, 0

    async def worker():
        nonlocal next_index, made, errors
        while next_index < n and time.monotonic() < deadline:
            next_index += 1
            try:
                await asyncio.wait_for(one_connection(port, request), TIMEOUT)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, RuntimeError):
                errors += 1
            made += 1
            if progress and made % 10000 == 0:
                print(f"churn: {made:,}/{n:,} connections, {errors} errors", file=sys.stderr)

    await asyncio.gather(*(worker() for _ in range(min(CONCURRENCY, max(n, 1)))))
    return made, errors


def main():
    port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    pids = [int(p) for p in sys.argv[4:]]
    asyncio.run(churn(port, path, WARMUP, time.monotonic() + 30))
    time.sleep(1.0)
    start = rss_kib(pids)
    peak = Peak(pids)
    peak.start()
    made, errors = asyncio.run(churn(port, path, n, time.monotonic() + DEADLINE, progress=True))
    time.sleep(3.0)
    peak.done.set()
    peak.join()
    end = rss_kib(pids)
    print(f"CHURN start_kib={start} peak_kib={max(peak.peak, end)} end_kib={end} n={made} errors={errors}")


if __name__ == "__main__":
    main()
