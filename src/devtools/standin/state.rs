//! The stand-in's state: issued codes and tokens, revoked grants, recorded requests, injected
//! faults, shared by every connection.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::config::{Fault, Recorded, StandinConfig};
use super::wire::TokenResponse;

pub(super) struct Core {
    pub(super) config: StandinConfig,
    pub(super) grants: Mutex<Grants>,
    pub(super) requests: Mutex<Vec<Recorded>>,
    pub(super) fault: Mutex<Option<Fault>>,
    /// Failure injected on the user endpoint.
    pub(super) me_fault: Mutex<Option<Fault>>,
    pub(super) shutdown: watch::Sender<bool>,
}

pub(super) struct Code {
    pub(super) client_id: String,
    pub(super) redirect_uri: Option<String>,
    pub(super) used: bool,
}

pub(super) struct RefreshEntry {
    pub(super) client_id: String,
    pub(super) grant: u64,
    pub(super) retired: bool,
}

pub(super) struct AccessEntry {
    pub(super) grant: u64,
    /// `None` when the TTL is too large to represent (never expires).
    pub(super) expires_at: Option<Instant>,
}

#[derive(Default)]
pub(super) struct Grants {
    pub(super) codes: HashMap<String, Code>,
    pub(super) refresh: HashMap<String, RefreshEntry>,
    pub(super) access: HashMap<String, AccessEntry>,
    pub(super) revoked: HashSet<u64>,
    pub(super) next_grant: u64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Grants {
    fn new_grant(&mut self) -> u64 {
        self.next_grant += 1;
        self.next_grant
    }

    pub(super) fn new_access(&mut self, grant: u64, ttl: u64) -> String {
        let token = random_token();
        let expires_at = Instant::now().checked_add(Duration::from_secs(ttl));
        self.access.insert(token.clone(), AccessEntry { grant, expires_at });
        token
    }

    pub(super) fn new_refresh(&mut self, client_id: &str, grant: u64) -> String {
        let token = random_token();
        let entry = RefreshEntry { client_id: client_id.to_owned(), grant, retired: false };
        self.refresh.insert(token.clone(), entry);
        token
    }

    /// Starts a new grant and issues its first access and refresh tokens.
    pub(super) fn new_tokens(&mut self, client_id: &str, ttl: u64) -> TokenResponse {
        let grant = self.new_grant();
        let access = self.new_access(grant, ttl);
        let refresh = self.new_refresh(client_id, grant);
        TokenResponse::new(access, Some(refresh), ttl)
    }

    pub(super) fn access_valid(&self, token: &str) -> bool {
        self.access.get(token).is_some_and(|a| {
            !self.revoked.contains(&a.grant) && a.expires_at.is_none_or(|t| t > Instant::now())
        })
    }
}

pub(super) fn mint_code(shared: &Core, client_id: &str, redirect_uri: Option<&str>) -> String {
    let code = random_token();
    let entry =
        Code { client_id: client_id.to_owned(), redirect_uri: redirect_uri.map(str::to_owned), used: false };
    lock(&shared.grants).codes.insert(code.clone(), entry);
    code
}
