//! What hot reload keeps between attempts: the file the config came from, the fingerprint of
//! what it last read, and the status `GET /reload` shows. The reload itself is
//! `admin::reload`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Config;

use super::migration::rfc3339;

/// What `GET /reload` and `POST /reload` answer.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// The config file reloads read, if the process was started from one.
    pub source: Option<PathBuf>,
    /// 1 at start, +1 per applied reload.
    pub generation: u64,
    /// When the config in force was loaded.
    pub(crate) loaded_at: String,
    /// The last attempt, successful or not.
    pub last_attempt: Option<Attempt>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub at: String,
    /// `sighup`, `file`, `admin`.
    pub trigger: &'static str,
    pub ok: bool,
    /// Why the new config was refused (one line, never a secret).
    pub error: Option<String>,
    /// Keys that changed but take effect only after a restart.
    pub restart_required: Vec<&'static str>,
    /// Clients whose mode changed, as `id: old -> new`.
    pub mode_changes: Vec<String>,
    /// Clients whose secret changed (ids only), e.g. a rotated `secret_file`.
    pub secret_changes: Vec<String>,
    /// Whether the admin token changed.
    pub(crate) admin_token_changed: bool,
}

pub struct ReloadState {
    source: OnceLock<PathBuf>,
    pub status: Mutex<ReloadStatus>,
    /// Hash of the file content last read by a reload or the watcher.
    pub(crate) fingerprint: Mutex<Option<[u8; 32]>>,
    /// One reload at a time.
    pub(crate) serial: Mutex<()>,
}

impl Default for ReloadState {
    fn default() -> Self {
        Self {
            source: OnceLock::new(),
            status: Mutex::new(ReloadStatus {
                source: None,
                generation: 1,
                loaded_at: rfc3339(SystemTime::now()),
                last_attempt: None,
            }),
            fingerprint: Mutex::new(None),
            serial: Mutex::new(()),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ReloadState {
    /// Name the file the running config came from; reloads read it. Set once.
    pub fn set_source(&self, path: PathBuf) {
        // The secret files are those the file names (read without validating it again).
        let named = Config::read_unvalidated(&path).unwrap_or_default();
        *lock(&self.fingerprint) = fingerprint(&path, &named);
        lock(&self.status).source = Some(path.clone());
        let _ = self.source.set(path);
    }

    pub(crate) fn source(&self) -> Option<&Path> {
        self.source.get().map(PathBuf::as_path)
    }

    pub fn status(&self) -> ReloadStatus {
        lock(&self.status).clone()
    }
}

/// SHA-256 over the config file's content and that of every `secret_file`, the admin
/// `token_file` and the files of `[server.tls]` and `[admin.tls]` `config` names (following symlinks, as ConfigMap and Secret mounts need), so a
/// rotated secret file is noticed like an edited config. `None` when the config file cannot
/// be read; an unreadable secret file counts as empty (the reload then says why it failed).
pub(crate) fn fingerprint(path: &Path, config: &Config) -> Option<[u8; 32]> {
    let mut hash = Sha256::new();
    hash.update(std::fs::read(path).ok()?);
    let files = config.clients.iter().filter_map(|c| c.secret_file.as_deref());
    let tls = [&config.server.tls, &config.admin.tls]
        .into_iter()
        .flatten()
        .flat_map(|t| [Some(t.cert_file.as_path()), Some(t.key_file.as_path()), t.client_ca_file.as_deref()]);
    for file in files.chain(config.admin.token_file.as_deref()).chain(tls.flatten()) {
        hash.update([0u8]);
        hash.update(file.as_os_str().as_encoded_bytes());
        hash.update([0u8]);
        hash.update(std::fs::read(file).unwrap_or_default());
    }
    Some(hash.finalize().into())
}
