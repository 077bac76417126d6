//! Where the Redis master is: the one `url` (standalone), or the master of `[state] master_name`
//! as the sentinels report it (Sentinel), asked again whenever Redis fails, so a failover is
//! followed (redis-rs's connection manager alone stays on the address it was built with).
//! Also builds the client for a data node, with the data nodes' TLS and password.

use std::time::Duration;

use redis::IntoConnectionInfo;

use crate::config::{ConfigError, StateConfig};

/// The sentinels of one master.
pub(crate) struct Sentinels {
    clients: Vec<redis::Client>,
    master_name: String,
    timeout: Duration,
}

impl Sentinels {
    /// `None` without `[state] sentinels`.
    pub(crate) fn from_config(cfg: &StateConfig) -> Result<Option<Self>, ConfigError> {
        if cfg.sentinels.is_empty() {
            return Ok(None);
        }
        let bad = |e: redis::RedisError| ConfigError(format!("state.sentinels: {}", e.category()));
        let scheme = if cfg.sentinel_tls { "rediss" } else { "redis" };
        let root_cert = cfg.sentinel_ca_pem()?;
        let mut clients = Vec::new();
        for addr in &cfg.sentinels {
            let mut info = format!("{scheme}://{addr}").into_connection_info().map_err(bad)?;
            if let Some(password) = &cfg.sentinel_password {
                let settings = info.redis_settings().clone().set_password(password.expose());
                info = info.set_redis_settings(settings);
            }
            let client = match &root_cert {
                Some(root) => redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates { client_tls: None, root_cert: Some(root.clone()) },
                ),
                None => redis::Client::open(info),
            };
            clients.push(client.map_err(bad)?);
        }
        let master_name = cfg.master_name.clone().unwrap_or_default();
        Ok(Some(Self { clients, master_name, timeout: cfg.connect_timeout + cfg.command_timeout }))
    }

    /// The master's `host:port` as the first sentinel that answers reports it.
    pub(crate) async fn master(&self) -> Option<String> {
        for client in &self.clients {
            let ask = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.master_name)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match tokio::time::timeout(self.timeout, ask).await {
                Ok(Ok(Some((host, port)))) => return Some(format!("{host}:{port}")),
                Ok(Ok(None)) => tracing::debug!("state: a sentinel does not know the master"),
                Ok(Err(e)) => tracing::debug!(error = e.category(), "state: a sentinel did not answer"),
                Err(_) => tracing::debug!("state: a sentinel did not answer in time"),
            }
        }
        None
    }
}

/// The client of the data node at `addr` (`host:port`; `None`: `url`'s own), with `url`'s
/// scheme, user name and database, the password and the CA of `[state]`.
pub(crate) fn data_client(cfg: &StateConfig, addr: Option<&str>) -> Result<redis::Client, ConfigError> {
    let url = match (cfg.url.as_deref(), addr) {
        (Some(url), None) => url.to_owned(),
        (template, Some(addr)) => {
            let mut url = url::Url::parse(template.unwrap_or("redis://master"))
                .map_err(|_| ConfigError("state.url is not a URL".into()))?;
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
            url.set_host(Some(host)).map_err(|_| ConfigError("state: a bad master address".into()))?;
            url.set_port(port.parse().ok()).map_err(|()| ConfigError("state: a bad master port".into()))?;
            url.to_string()
        }
        (None, None) => return Err(ConfigError("state.url is required".into())),
    };
    node_client(cfg, &url)
}

/// The client of the data node at `url`, with the password and the CA of `[state]`.
pub(crate) fn node_client(cfg: &StateConfig, url: &str) -> Result<redis::Client, ConfigError> {
    let bad = |e: redis::RedisError| ConfigError(format!("state.url: {}", e.category()));
    let mut info = url.into_connection_info().map_err(bad)?;
    if let Some(password) = &cfg.password {
        let settings = info.redis_settings().clone().set_password(password.expose());
        info = info.set_redis_settings(settings);
    }
    match cfg.ca_pem()? {
        Some(root_cert) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) },
        ),
        None => redis::Client::open(info),
    }
    .map_err(bad)
}
