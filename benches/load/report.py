#!/usr/bin/env python3
"""Turn the raw results of benches/load/run.sh into the markdown table and the bar checks.

Usage: report.py RESULTS_TSV CLK_TCK [MEMORY_FILE [TLS_MEMORY_SHIM TLS_MEMORY_NGINX [CHURN_FILE]]]
MEMORY_FILE lines (proxy is oauth-shim, nginx or haproxy): proxy connections RSS idle_kib=... held_kib=... open=... closed=...
CHURN_FILE lines: proxy CHURN start_kib=... peak_kib=... end_kib=... n=... errors=...
RESULTS_TSV columns: rep target requests duration_us p50_us p99_us p999_us errors
                     proxy_ticks upstream_ticks   (ticks are "-" where there is no such process)
"""

import statistics
import sys

TARGETS = ["direct", "nginx", "haproxy", "shim-pass", "shim-token", "shim-cached", "shim-coalesced",
           "shim-redis-cached", "shim-redis-coalesced", "shim-redis-coalesced-ack",
           "nginx-tls", "shim-tls", "nginx-tls-new", "shim-tls-new"]
# The TLS targets are compared with nginx on TLS in the same mode, the others with the better of
# plain nginx and HAProxy in the same run, per measure.
PASS_PEERS = ["nginx", "haproxy"]
PEER = {"nginx-tls": "nginx-tls", "shim-tls": "nginx-tls",
        "nginx-tls-new": "nginx-tls-new", "shim-tls-new": "nginx-tls-new"}
# The Redis backend's targets and their memory twins (shim-token-redis).
REDIS_PAIRS = [("cached refresh", "shim-redis-cached", "shim-cached"),
               ("coalesced refresh", "shim-redis-coalesced", "shim-coalesced"),
               ("coalesced refresh, acknowledged lock", "shim-redis-coalesced-ack",
                "shim-redis-coalesced")]


def fmt(values, scale=1.0, digits=0):
    vals = [v * scale for v in values]
    med = statistics.median(vals)
    f = f"{{:,.{digits}f}}"
    if len(vals) == 1:
        return f.format(med)
    return f"{f.format(med)} ({f.format(min(vals))}–{f.format(max(vals))})"


def memory_rows(path):
    """(proxy, connections, RSS added in MiB, KB per connection, open, closed) per probe."""
    rows = []
    if not path:
        return rows
    for line in open(path):
        cols = line.split()
        if len(cols) < 3 or cols[2] != "RSS":
            continue
        kv = dict(p.split("=") for p in cols[3:])
        added_kib = int(kv["held_kib"]) - int(kv["idle_kib"])
        n = int(cols[1])
        rows.append((cols[0], n, added_kib / 1024, added_kib * 1.024 / n, kv["open"], kv["closed"]))
    return rows


def print_memory(path):
    rows = memory_rows(path)
    if not rows:
        return
    print("Memory: RSS added by idle keep-alive connections, each proxy freshly started:")
    print()
    print("| connections | oauth-shim | per connection | nginx | per connection | haproxy "
          "| per connection | oauth-shim ÷ nginx | oauth-shim ÷ haproxy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sorted({r[1] for r in rows}):
        shim, ngx, hap = (next((r for r in rows if r[0] == proxy and r[1] == n), None)
                          for proxy in ("oauth-shim", "nginx", "haproxy"))
        cell = lambda r: (f"+{r[2]:.1f} MiB", f"{r[3]:.2f} KB") if r else ("–", "–")  # noqa: E731
        ratio = lambda peer: f"{shim[3] / peer[3]:.2f}×" if shim and peer and peer[3] > 0 else "–"  # noqa: E731
        print(f"| {n:,} | {' | '.join(cell(shim))} | {' | '.join(cell(ngx))} | {' | '.join(cell(hap))} "
              f"| {ratio(ngx)} | {ratio(hap)} |")
    print()


def print_churn(path):
    rows = []
    for line in open(path) if path else []:
        cols = line.split()
        if len(cols) < 3 or cols[1] != "CHURN":
            continue
        rows.append((cols[0], {k: int(v) for k, v in (p.split("=") for p in cols[2:])}))
    if not rows:
        return
    print("Memory under churn: RSS of each proxy freshly started, idle after a warm-up, at the peak "
          "while connections came and went (one request each, at most 500 open), and ~3 s after:")
    print()
    print("| proxy | connections | errors | start | peak | end | end vs start |")
    print("|---|---|---|---|---|---|---|")
    for proxy, kv in rows:
        mib = lambda k: f"{kv[k] / 1024:.1f} MiB"  # noqa: E731
        growth = (kv["end_kib"] - kv["start_kib"]) / kv["start_kib"] * 100 if kv["start_kib"] else 0.0
        print(f"| {proxy} | {kv['n']:,} | {kv['errors']} | {mib('start_kib')} | {mib('peak_kib')} "
              f"| {mib('end_kib')} | {growth:+.1f}% |")
    print()


def main():
    path, clk_tck = sys.argv[1], int(sys.argv[2])
    memory = sys.argv[3] if len(sys.argv) > 3 else ""
    tls_memory = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] and sys.argv[5] else None
    churn = sys.argv[6] if len(sys.argv) > 6 else ""
    runs = {t: [] for t in TARGETS}
    for line in open(path):
        cols = line.split()
        if len(cols) != 10 or cols[0] == "rep":
            continue
        _, target, req, dur, p50, p99, p999, errors, pticks, uticks = cols
        req, dur = int(req), int(dur)
        r = {
            "rps": req / (dur / 1e6),
            "p50": int(p50) / 1000,
            "p99": int(p99) / 1000,
            "p999": int(p999) / 1000,
            "errors": int(errors),
            # CPU seconds / requests, in microseconds per request.
            "pcpu": None if pticks == "-" else int(pticks) / clk_tck / req * 1e6,
            "ucpu": None if uticks == "-" else int(uticks) / clk_tck / req * 1e6,
        }
        runs[target].append(r)

    def med(target, key):
        vals = [r[key] for r in runs[target] if r[key] is not None]
        return statistics.median(vals) if vals else None

    def best(key):
        """The better pass-through peer for one measure: more req/s, less p99 and CPU per request."""
        measured = [(med(p, key), p) for p in PASS_PEERS if med(p, key) is not None]
        if not measured:
            return "nginx"
        pick = max if key == "rps" else min
        return pick(measured)[1]

    def ratio_to(target, peer, key):
        a, b = med(target, key), med(peer, key)
        if a is None or b is None or b == 0:
            return "–"
        return f"{a / b:.2f}×"

    def ratio(target, key):
        return ratio_to(target, PEER.get(target, best(key)), key)

    print("| target | req/s | p50 ms | p99 ms | p99.9 ms | proxy CPU µs/req | upstream CPU µs/req "
          f"| req/s ÷ {best('rps')} | p99 ÷ {best('p99')} | proxy CPU ÷ {best('pcpu')} | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in TARGETS:
        rs = runs[t]
        if not rs:
            continue
        col = lambda k, d: fmt([r[k] for r in rs], digits=d) if rs[0][k] is not None else "–"  # noqa: E731
        print(f"| {t} | {col('rps', 0)} | {col('p50', 2)} | {col('p99', 2)} | {col('p999', 2)} "
              f"| {col('pcpu', 1)} | {col('ucpu', 1)} | {ratio(t, 'rps')} | {ratio(t, 'p99')} "
              f"| {ratio(t, 'pcpu')} | {sum(r['errors'] for r in rs)} |")
    print()
    print("Medians over the repetitions, (min–max) in brackets; ratios are median ÷ the median of the "
          "better pass-through peer in this run for that measure (named in the header: more req/s, less "
          "p99, less CPU per request; TLS targets ÷ nginx-tls or nginx-tls-new). CPU is user+system time "
          "of the proxy process(es) from /proc/PID/stat.")
    print()
    peers = [f"{what} {best(k)}" for what, k in (("req/s", "rps"), ("p99", "p99"), ("CPU per request", "pcpu"))
             if any(med(p, k) is not None for p in PASS_PEERS)]
    if any(runs[p] for p in PASS_PEERS):
        print(f"The better pass-through peer in this run: {'; '.join(peers)}.")
        print()
    if all(runs[p] for p in PASS_PEERS):
        print("Against each pass-through peer (medians of this run):")
        print()
        print("| target | req/s ÷ nginx | req/s ÷ haproxy | p99 ÷ nginx | p99 ÷ haproxy "
              "| proxy CPU ÷ nginx | proxy CPU ÷ haproxy |")
        print("|---|---|---|---|---|---|---|")
        for t in TARGETS:
            if not runs[t] or t in PEER or t == "direct":
                continue
            cells = " | ".join(ratio_to(t, p, k) for k in ("rps", "p99", "pcpu") for p in PASS_PEERS)
            print(f"| {t} | {cells} |")
        print()

    pairs = []
    for name, redis, memory_twin in REDIS_PAIRS:
        rps, cpu = med(redis, "rps"), med(redis, "pcpu")
        rps_m, cpu_m = med(memory_twin, "rps"), med(memory_twin, "pcpu")
        if None in (rps, cpu, rps_m, cpu_m) or 0 in (rps_m, cpu_m):
            continue
        pairs.append(f"- {name}: req/s {rps / rps_m:.2f}×, CPU µs/req (oauth-shim + redis-server) "
                     f"{cpu / cpu_m:.2f}×, p99 {med(redis, 'p99') / med(memory_twin, 'p99'):.2f}× "
                     f"({redis} ÷ {memory_twin})")
    if pairs:
        print("Redis backend ÷ memory backend (the acknowledged lock ÷ the plain one), medians of this run:")
        print("\n".join(pairs))
        print()
    print_memory(memory)
    print_churn(churn)

    checks = []

    def bar(name, value, op, limit, unit="×"):
        if value is None:
            checks.append(f"- [ ] {name}: not measured")
            return
        ok = value <= limit if op == "<=" else value >= limit
        checks.append(f"- [{'x' if ok else ' '}] {name}: {value:.2f}{unit} (bar {op} {limit}{unit})"
                      f"{'' if ok else '  **NOT MET**'}")

    def r(t, k):
        a, b = med(t, k), med(best(k), k)
        return None if a is None or b is None or b == 0 else a / b

    def rss(line):
        kv = dict(p.split("=") for p in line.split()[1:])
        return (int(kv["held_kib"]) - int(kv["idle_kib"])) / max(int(kv["open"]), 1), kv

    def tls_r(t, peer, k):
        a, b = med(t, k), med(peer, k)
        return None if a is None or b is None or b == 0 else a / b

    tls_lines = []
    if runs["shim-tls"] and runs["nginx-tls"]:
        tls_lines.append(f"- TLS pass-through proxy CPU per request: {tls_r('shim-tls', 'nginx-tls', 'pcpu'):.2f}× nginx "
                         f"(p99 {tls_r('shim-tls', 'nginx-tls', 'p99'):.2f}×)")
    if runs["shim-tls-new"] and runs["nginx-tls-new"]:
        tls_lines.append(f"- new TLS connections per second: {tls_r('shim-tls-new', 'nginx-tls-new', 'rps'):.2f}× nginx; "
                         f"CPU per handshake {tls_r('shim-tls-new', 'nginx-tls-new', 'pcpu'):.2f}× nginx")
    if tls_memory:
        (shim_per, shim_kv), (ngx_per, ngx_kv) = rss(tls_memory[0]), rss(tls_memory[1])
        tls_lines.append(f"- RSS per idle TLS connection: {shim_per:.1f} KiB vs nginx {ngx_per:.1f} KiB: "
                         f"{shim_per / ngx_per:.2f}× ({shim_kv['open']} and {ngx_kv['open']} held open)")
    if tls_lines:
        print("TLS, oauth-shim ÷ nginx with ssl, medians of this run:")
        print("\n".join(tls_lines))
        print()

    if not any(runs[p] for p in PASS_PEERS):
        return
    cpu_peer, p99_peer, rps_peer = best("pcpu"), best("p99"), best("rps")
    bar(f"shim-pass proxy CPU/req ÷ {cpu_peer}", r("shim-pass", "pcpu"), "<=", 1.0)
    bar(f"shim-pass p99 ÷ {p99_peer}", r("shim-pass", "p99"), "<=", 1.1)
    bar(f"shim-token proxy CPU/req ÷ {cpu_peer} pass-through", r("shim-token", "pcpu"), "<=", 1.3)
    bar(f"shim-cached req/s ÷ {rps_peer} pass-through", r("shim-cached", "rps"), ">=", 2.0)
    for proxy, n, added, per_conn, open_, closed in memory_rows(memory):
        if proxy == "oauth-shim":
            bar(f"RSS per idle keep-alive connection, {n:,} held ({open_} open, {closed} closed early)",
                per_conn, "<=", 2.0, " KB")
    if runs["shim-tls"] and runs["nginx-tls"]:
        bar("shim-tls proxy CPU/req ÷ nginx-tls", tls_r("shim-tls", "nginx-tls", "pcpu"), "<=", 1.0)
    if runs["shim-tls-new"] and runs["nginx-tls-new"]:
        bar("shim-tls-new proxy CPU/handshake ÷ nginx-tls-new", tls_r("shim-tls-new", "nginx-tls-new", "pcpu"),
            "<=", 1.0)
    print("Bars:")
    print("\n".join(checks))


if __name__ == "__main__":
    main()
