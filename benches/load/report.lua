-- wrk reporter: one machine-readable line after the run (latencies in microseconds).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50=%d p99=%d p999=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect, e.read, e.write, e.status, e.timeout))
end

-- shim-token: a distinct refresh token on every request (UNIQUE_TOKENS=1), so the refresh
-- single flight never coalesces two requests and each one is a full rewrite + upstream call.
if os.getenv("UNIQUE_TOKENS") == "1" then
  local n = 0
  request = function()
    n = n + 1
    local path = string.gsub(wrk.path, "refresh_token=bench%-refresh%-token", "refresh_token=bench-refresh-token-" .. n)
    return wrk.format(nil, path)
  end
end
