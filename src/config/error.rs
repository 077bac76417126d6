//! `ConfigError`, the one-line config problem, and reading a secret from its env var or file.

use std::path::Path;

use crate::oauth::Secret;

/// A configuration problem, reported as one line that never contains a secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Read a secret from the environment variable or file named for it (at most one of them).
pub(super) fn read_secret_source(
    what: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    let value = match (env, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err(ConfigError(format!("{what}: set only one of _env and _file"))),
        (Some(var), None) => std::env::var(var)
            .map_err(|_| ConfigError(format!("{what}: environment variable {var} is not set")))?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{what}: cannot read {}: {}", path.display(), e.kind())))?,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(ConfigError(format!("{what} is empty")));
    }
    Ok(Some(Secret::new(value)))
}
