//! The process's own metrics, read from `/proc` by the `procfs` crate at scrape time, under the
//! names Prometheus client libraries use: CPU seconds, resident and virtual memory, open and
//! maximum file descriptors, threads, start time. A figure that cannot be read is left out.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The `process_*` families as of now.
#[cfg(target_os = "linux")]
pub(super) fn registry() -> Registry {
    let mut r = Registry::with_prefix("process");
    let Ok(me) = procfs::process::Process::myself() else { return r };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        let cpu = (stat.utime + stat.stime) as f64 / ticks;
        r.register("cpu_seconds", "Total user and system CPU time spent in seconds", ConstCounter::new(cpu));
        let page = procfs::page_size();
        let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        r.register("resident_memory_bytes", "Resident memory size in bytes", gauge(stat.rss * page));
        r.register("virtual_memory_bytes", "Virtual memory size in bytes", gauge(stat.vsize));
        r.register("threads", "Number of OS threads in the process", ConstGauge::new(stat.num_threads));
        if let Ok(boot) = procfs::boot_time_secs() {
            let start = boot as f64 + stat.starttime as f64 / ticks;
            r.register(
                "start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                ConstGauge::new(start),
            );
        }
    }
    if let Ok(n) = me.fd_count() {
        r.register("open_fds", "Number of open file descriptors", ConstGauge::new(n as i64));
    }
    if let Ok(limits) = me.limits()
        && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
    {
        r.register(
            "max_fds",
            "Maximum number of open file descriptors",
            ConstGauge::new(i64::try_from(max).unwrap_or(i64::MAX)),
        );
    }
    r
}

/// No `/proc` to read: no process families.
#[cfg(not(target_os = "linux"))]
pub(super) fn registry() -> Registry {
    let _ = (ConstCounter::new(0u64), ConstGauge::new(0i64));
    Registry::default()
}
