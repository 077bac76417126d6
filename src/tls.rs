//! TLS for the listeners: the certificate pair (and client CA) a `[server.tls]` or `[admin.tls]`
//! names, read and checked (readable, the key matches the certificate, not expired) into a
//! rustls server config (TLS 1.2 and 1.3, the ring provider); and what the access line and
//! `check-config` show of a certificate. A snapshot holds one per listener, so a reload (file
//! change, SIGHUP, `/reload`) gives new handshakes the new pair, and a bad pair fails the reload.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientCertPolicy, ConfigError, TlsConfig};

/// ALPN for the proxy listener: HTTP/2 preferred.
pub(crate) const ALPN_PROXY: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN for the admin listener, which speaks HTTP/1.1 only.
pub(crate) const ALPN_ADMIN: &[&[u8]] = &[b"http/1.1"];

/// A listener's TLS, ready for handshakes.
pub struct Tls {
    pub(crate) server: Arc<rustls::ServerConfig>,
    /// The leaf certificate served.
    pub leaf: CertInfo,
    /// Client certificates are verified (`client_ca_file` is set).
    pub(crate) client_auth: bool,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_handshakes: usize,
}

/// What is shown of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject as an RFC 4514 string (`CN=…, O=…`).
    pub subject: String,
    /// The serial number, hex bytes separated by `:`.
    pub serial: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

impl Tls {
    /// Read and check the files `cfg` names (`section` is `server.tls` or `admin.tls`, for the
    /// error) and build the config handshakes use, with ALPN `alpn`.
    pub fn load(cfg: &TlsConfig, section: &str, alpn: &[&[u8]]) -> Result<Self, ConfigError> {
        let chain = read_certs(&cfg.cert_file, section, "cert_file")?;
        let leaf = cert_info(&chain[0]).ok_or_else(|| {
            ConfigError(format!("{section}.cert_file: {}: not an X.509 certificate", cfg.cert_file.display()))
        })?;
        let now = unix_seconds(SystemTime::now());
        if leaf.not_after <= now {
            return Err(ConfigError(format!(
                "{section}.cert_file: {}: the certificate ({}) expired at {}",
                cfg.cert_file.display(),
                leaf.subject,
                rfc3339(leaf.not_after)
            )));
        }
        let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
            ConfigError(format!(
                "{section}.key_file: cannot read a private key from {}: {}",
                cfg.key_file.display(),
                pem_error(&e)
            ))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError(format!("{section}: {e}")))?;
        let builder = match &cfg.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(file) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(file, section, "client_ca_file")? {
                    roots.add(cert).map_err(|e| {
                        ConfigError(format!("{section}.client_ca_file: {}: {e}", file.display()))
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match cfg.client_auth {
                    ClientCertPolicy::Required => verifier,
                    ClientCertPolicy::Optional => verifier.allow_unauthenticated(),
                };
                let verifier =
                    verifier.build().map_err(|e| ConfigError(format!("{section}.client_ca_file: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => ConfigError(format!(
                "{section}: the private key in {} does not match the certificate in {}",
                cfg.key_file.display(),
                cfg.cert_file.display()
            )),
            e => ConfigError(format!("{section}: cannot use the key in {}: {e}", cfg.key_file.display())),
        })?;
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            server: Arc::new(server),
            leaf,
            client_auth: cfg.client_ca_file.is_some(),
            handshake_timeout: cfg.handshake_timeout,
            max_handshakes: cfg.max_handshakes,
        })
    }
}

/// The certificates of a PEM file, at least one.
fn read_certs(file: &Path, section: &str, key: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let err = |why: String| {
        ConfigError(format!("{section}.{key}: cannot read certificates from {}: {why}", file.display()))
    };
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| err(pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(pem_error(&e)))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// A PEM error in a few words; an I/O error by its kind (never file content).
fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.kind().to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM block of that kind".into(),
        _ => "malformed PEM".into(),
    }
}

/// Subject, serial and expiry of a DER certificate; `None` if it does not parse.
pub fn cert_info(der: &CertificateDer<'_>) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(CertInfo {
        subject: cert.subject().to_string(),
        serial: cert.raw_serial_as_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The subject of a verified client certificate, for the access line.
pub(crate) fn subject(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.subject().to_string())
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix seconds as an RFC 3339 UTC time.
pub fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}
