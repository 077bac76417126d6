//! The upstream connection pools a provider owns (one for pass-through, one for token calls),
//! built from `[upstream]` and reconfigured in place on reload.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::UpstreamConfig;
use crate::upstream::Upstream;

/// Build a pooled client (the app builds two, so token calls and pass-through never share a
/// connection). TLS is rustls with the webpki roots; HTTP/2 is negotiated by ALPN where the
/// upstream offers it.
pub(crate) fn build_client(cfg: &UpstreamConfig) -> Upstream {
    Upstream::new(
        build_connector(cfg),
        cfg.pool_idle_timeout,
        cfg.pool_max_idle_per_host,
        cfg.max_response_header_bytes,
    )
}

/// Apply a reloaded `[upstream]` to the pool: its limits, and a new connector (connect timeout,
/// extra CA certificates) when those changed.
pub(crate) fn reconfigure_client(client: &Upstream, old: &UpstreamConfig, new: &UpstreamConfig) {
    let connector_changed = old.connect_timeout != new.connect_timeout || old.ca_file != new.ca_file;
    if !connector_changed
        && old.pool_idle_timeout == new.pool_idle_timeout
        && old.pool_max_idle_per_host == new.pool_max_idle_per_host
        && old.max_response_header_bytes == new.max_response_header_bytes
    {
        return;
    }
    let connector = connector_changed.then(|| build_connector(new));
    client.reconfigure(
        connector,
        new.pool_idle_timeout,
        new.pool_max_idle_per_host,
        new.max_response_header_bytes,
    );
}

/// TCP (with the connect timeout) and rustls for https, offering HTTP/2 and HTTP/1.1 by ALPN.
fn build_connector(cfg: &UpstreamConfig) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));

    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    // Validated at config load; a certificate rustls cannot use is skipped, not fatal.
    let (_added, _ignored) = roots.add_parsable_certificates(cfg.extra_roots().unwrap_or_default());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            // The ring provider always supports the default versions; this is unreachable in
            // practice but must not panic.
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
                .expect("TLS 1.3 is supported by ring")
        });
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}
