//! The pool of upstream connections, one short list of hosts: the client takes a connection
//! from it before a request and gives it back once the answer is read. What it pools is any
//! [`Poolable`]: the pool never learns what a connection is, and a connection never learns
//! the pool.
//!
//! oauth-shim talks to one or two upstream hosts (the API base and the token URL), so the hosts
//! are a short list scanned by scheme and authority under one lock, not a hash map: no key is
//! hashed or cloned per request. Idle connections are reused last-in first-out, expire after
//! the idle timeout, and at most `max_idle` are kept per host. A connection that can be shared
//! (HTTP/2) is kept once per host and handed to every request. A connection that is no longer
//! open (the upstream closed it, or sent something unasked) is skipped when it is taken.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use http::HeaderValue;
use http::uri::{Authority, Scheme};

/// What the pool needs to know about a connection.
pub(crate) trait Poolable: Send + Sized + 'static {
    /// Whether it can take a request now. Never waits.
    fn is_open(&mut self) -> bool;
    /// Split a connection that serves many requests at once into the copy the pool keeps and
    /// the one handed out; any other connection is handed out whole.
    fn reserve(self) -> Reservation<Self>;
    /// Whether it serves many requests at once (kept as the host's one shared connection).
    fn can_share(&self) -> bool;
}

/// What [`Poolable::reserve`] made of a connection.
pub(crate) enum Reservation<T> {
    /// The first stays in the pool, the second is handed out.
    Shared(T, T),
    Unique(T),
}

/// Where a connection goes back to: its host, and the pool's generation it was opened under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    index: usize,
    generation: u64,
}

/// What [`Pool::checkout`] tells a request about its host.
pub(crate) struct HostInfo {
    pub(crate) key: Key,
    /// `Host` for requests that carry none: host, and the port unless it is the default.
    pub(crate) host_header: HeaderValue,
}

pub(crate) struct Pool<T> {
    hosts: Mutex<Hosts<T>>,
}

struct Hosts<T> {
    list: Vec<Host<T>>,
    /// Bumped by [`Pool::clear`]: connections opened before are not pooled again.
    generation: u64,
    /// Whether the task that closes expired idle connections runs.
    sweeping: bool,
    idle_timeout: Duration,
    /// Idle connections kept per host; 0 keeps none.
    max_idle: usize,
}

struct Host<T> {
    scheme: Scheme,
    authority: Authority,
    host_header: HeaderValue,
    /// Ready connections, most recently used last.
    idle: Vec<Idle<T>>,
    /// The host's shared connection, if it has one.
    shared: Option<T>,
}

struct Idle<T> {
    conn: T,
    since: Instant,
}

impl<T: Poolable> Pool<T> {
    pub(crate) fn new(idle_timeout: Duration, max_idle: usize) -> Self {
        let hosts = Hosts { list: Vec::new(), generation: 0, sweeping: false, idle_timeout, max_idle: 0 };
        let pool = Self { hosts: Mutex::new(hosts) };
        pool.configure(idle_timeout, max_idle);
        pool
    }

    /// Apply new limits: idle connections over the new maximum are closed, oldest first.
    pub(crate) fn configure(&self, idle_timeout: Duration, max_idle: usize) {
        let mut hosts = self.hosts();
        hosts.idle_timeout = idle_timeout;
        // A zero idle timeout means no connection is kept.
        hosts.max_idle = if idle_timeout.is_zero() { 0 } else { max_idle };
        let max = hosts.max_idle;
        for host in &mut hosts.list {
            // The oldest go first (most recently used are last).
            let excess = host.idle.len().saturating_sub(max);
            host.idle.drain(..excess);
        }
    }

    /// Close every pooled connection, and pool none of those still out.
    pub(crate) fn clear(&self) {
        let mut hosts = self.hosts();
        hosts.generation += 1;
        for host in &mut hosts.list {
            host.idle.clear();
            host.shared = None;
        }
    }

    /// An open pooled connection to the host, if any, and what a request needs to know about
    /// the host.
    pub(crate) fn checkout(&self, scheme: &Scheme, authority: &Authority) -> (Option<T>, HostInfo) {
        let mut hosts = self.hosts();
        let (idle_timeout, generation) = (hosts.idle_timeout, hosts.generation);
        let index = hosts.index(scheme, authority);
        let host = &mut hosts.list[index];
        let info = HostInfo { key: Key { index, generation }, host_header: host.host_header.clone() };
        // A shared connection no longer open is dropped here.
        if let Some(mut shared) = host.shared.take()
            && shared.is_open()
        {
            return match shared.reserve() {
                Reservation::Shared(keep, give) => {
                    host.shared = Some(keep);
                    (Some(give), info)
                }
                Reservation::Unique(conn) => (Some(conn), info),
            };
        }
        let now = Instant::now();
        // Most recently used last.
        while let Some(mut idle) = host.idle.pop() {
            if now.duration_since(idle.since) < idle_timeout && idle.conn.is_open() {
                return (Some(idle.conn), info);
            }
            // Closed by the upstream, or expired: dropping it closes the connection.
        }
        (None, info)
    }

    /// Pool a connection opened for `key`: a shared one as the host's shared connection, any
    /// other as an idle one while the host has room. A connection opened before the last
    /// [`Pool::clear`] is dropped.
    pub(crate) fn put(self: &Arc<Self>, key: Key, conn: T) {
        let mut hosts = self.hosts();
        if key.generation != hosts.generation {
            return;
        }
        let max_idle = hosts.max_idle;
        let Some(host) = hosts.list.get_mut(key.index) else { return };
        if conn.can_share() {
            host.shared = Some(conn);
            return;
        }
        if host.idle.len() >= max_idle {
            return;
        }
        host.idle.push(Idle { conn, since: Instant::now() });
        if !hosts.sweeping {
            hosts.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    fn hosts(&self) -> MutexGuard<'_, Hosts<T>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T> Hosts<T> {
    /// The host's place in the list (hosts are never removed, so it stays valid).
    fn index(&mut self, scheme: &Scheme, authority: &Authority) -> usize {
        // Byte equality first: the URIs come from config, so the same host is spelled the same
        // way and the case-insensitive `Authority` comparison rarely has to run.
        let same = |h: &Host<T>| {
            (h.authority.as_str() == authority.as_str() || h.authority == *authority) && h.scheme == *scheme
        };
        match self.list.iter().position(same) {
            Some(i) => i,
            None => {
                self.list.push(Host {
                    scheme: scheme.clone(),
                    authority: authority.clone(),
                    host_header: host_header(scheme, authority),
                    idle: Vec::new(),
                    shared: None,
                });
                self.list.len() - 1
            }
        }
    }
}

/// `Host` as hyper-util's client formats it: the host, and the port unless it is the scheme's
/// default. The one place oauth-shim computes an upstream `Host`.
pub fn host_header(scheme: &Scheme, authority: &Authority) -> HeaderValue {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let value = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    // An authority's host and port are always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// Close idle connections older than the idle timeout, and shared ones no longer open, until
/// the pool is dropped.
async fn sweep<T: Poolable>(pool: Weak<Pool<T>>) {
    let mut every = Duration::ZERO;
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        let mut hosts = pool.hosts();
        // Read each round: a reload may change it.
        let idle_timeout = hosts.idle_timeout;
        every = (idle_timeout / 2).max(Duration::from_millis(100));
        for host in &mut hosts.list {
            host.idle.retain_mut(|i| now.duration_since(i.since) < idle_timeout && i.conn.is_open());
            if host.shared.as_mut().is_some_and(|s| !s.is_open()) {
                host.shared = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A connection without a socket: a name, whether it is shared, and a switch that closes it.
    #[derive(Clone)]
    struct Fake {
        id: u32,
        shared: bool,
        open: Arc<AtomicBool>,
    }

    impl Fake {
        fn new(id: u32) -> Self {
            Self { id, shared: false, open: Arc::new(AtomicBool::new(true)) }
        }
    }

    impl Poolable for Fake {
        fn is_open(&mut self) -> bool {
            self.open.load(Ordering::Relaxed)
        }
        fn reserve(self) -> Reservation<Self> {
            if self.shared { Reservation::Shared(self.clone(), self) } else { Reservation::Unique(self) }
        }
        fn can_share(&self) -> bool {
            self.shared
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn http(authority: &'static str) -> (Scheme, Authority) {
        (Scheme::HTTP, Authority::from_static(authority))
    }

    fn take(pool: &Pool<Fake>, (scheme, authority): &(Scheme, Authority)) -> (Option<u32>, Key) {
        let (conn, info) = pool.checkout(scheme, authority);
        (conn.map(|c| c.id), info.key)
    }

    #[tokio::test]
    async fn idle_connections_are_reused_last_in_first_out() {
        let pool = Arc::new(Pool::new(MINUTE, 4));
        let a = http("a.example");
        let (none, key) = take(&pool, &a);
        assert_eq!(none, None);
        pool.put(key, Fake::new(1));
        pool.put(key, Fake::new(2));
        assert_eq!(take(&pool, &a).0, Some(2));
        assert_eq!(take(&pool, &a).0, Some(1));
        assert_eq!(take(&pool, &a).0, None);
    }

    #[tokio::test]
    async fn hosts_are_kept_apart_by_scheme_and_authority() {
        let pool = Arc::new(Pool::new(MINUTE, 4));
        let (a, b) = (http("a.example"), http("b.example"));
        let https_a = (Scheme::HTTPS, Authority::from_static("a.example"));
        let (_, key_a) = take(&pool, &a);
        pool.put(key_a, Fake::new(1));
        assert_eq!(take(&pool, &b).0, None);
        assert_eq!(take(&pool, &https_a).0, None);
        assert_eq!(take(&pool, &a).0, Some(1));
    }

    #[tokio::test]
    async fn at_most_max_idle_are_kept_and_a_lower_limit_closes_the_oldest() {
        let pool = Arc::new(Pool::new(MINUTE, 2));
        let a = http("a.example");
        let (_, key) = take(&pool, &a);
        for id in 1..=3 {
            pool.put(key, Fake::new(id));
        }
        pool.configure(MINUTE, 1);
        assert_eq!(take(&pool, &a).0, Some(2));
        assert_eq!(take(&pool, &a).0, None);
        pool.configure(Duration::ZERO, 8);
        pool.put(key, Fake::new(4));
        assert_eq!(take(&pool, &a).0, None, "a zero idle timeout keeps nothing");
    }

    #[tokio::test]
    async fn closed_and_expired_connections_are_skipped() {
        let pool = Arc::new(Pool::new(MINUTE, 4));
        let a = http("a.example");
        let (_, key) = take(&pool, &a);
        let closed = Fake::new(2);
        pool.put(key, Fake::new(1));
        pool.put(key, closed.clone());
        closed.open.store(false, Ordering::Relaxed);
        assert_eq!(take(&pool, &a).0, Some(1));

        pool.configure(Duration::from_millis(1), 4);
        pool.put(key, Fake::new(3));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(take(&pool, &a).0, None, "idle for longer than the idle timeout");
    }

    #[tokio::test]
    async fn clear_closes_idle_connections_and_refuses_older_ones() {
        let pool = Arc::new(Pool::new(MINUTE, 4));
        let a = http("a.example");
        let (_, old) = take(&pool, &a);
        pool.put(old, Fake::new(1));
        pool.clear();
        let (none, new) = take(&pool, &a);
        assert_eq!(none, None);
        assert_ne!(old, new);
        pool.put(old, Fake::new(2));
        assert_eq!(take(&pool, &a).0, None, "opened before the clear");
        pool.put(new, Fake::new(3));
        assert_eq!(take(&pool, &a).0, Some(3));
    }

    #[tokio::test]
    async fn a_shared_connection_serves_every_checkout_until_it_closes() {
        let pool = Arc::new(Pool::new(MINUTE, 0));
        let a = http("a.example");
        let (_, key) = take(&pool, &a);
        let h2 = Fake { shared: true, ..Fake::new(7) };
        pool.put(key, h2.clone());
        assert_eq!(take(&pool, &a).0, Some(7));
        assert_eq!(take(&pool, &a).0, Some(7), "kept, though no idle connection is");
        h2.open.store(false, Ordering::Relaxed);
        assert_eq!(take(&pool, &a).0, None);
    }

    #[test]
    fn host_header_leaves_out_the_default_port() {
        let h = |s: Scheme, a| host_header(&s, &Authority::from_static(a));
        assert_eq!(h(Scheme::HTTP, "up.example:80"), "up.example");
        assert_eq!(h(Scheme::HTTPS, "up.example:443"), "up.example");
        assert_eq!(h(Scheme::HTTPS, "up.example:80"), "up.example:80");
        assert_eq!(h(Scheme::HTTP, "127.0.0.1:8080"), "127.0.0.1:8080");
    }
}
