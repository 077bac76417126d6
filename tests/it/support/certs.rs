//! Certificates made in the test with rcgen: a CA, server certificates for `localhost` and
//! 127.0.0.1 it signs (each with its own serial), client certificates, files to put them in,
//! and a rustls client (ring) that trusts the CA, for connecting to a TLS listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SerialNumber,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{
    self, pki_types::CertificateDer, pki_types::PrivateKeyDer, pki_types::ServerName,
};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1 with serial `serial`.
    pub fn server(&self, serial: u64) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.distinguished_name.push(DnType::CommonName, "oauth-shim test");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A server certificate that expired in 2020.
    pub fn expired_server(&self) -> Pair {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        self.sign(params)
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, cn: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, "workloads");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// Files for a TLS listener: `cert.pem`, `key.pem` and the CA's `ca.pem` in `dir`.
pub struct TlsFiles {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    pub fn write(dir: &Path, ca: &Ca, pair: &Pair) -> Self {
        let files = Self {
            dir: dir.to_path_buf(),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
        };
        std::fs::write(&files.ca, ca.pem()).unwrap();
        files.replace(pair);
        files
    }

    /// Replace the pair, each file written whole and renamed into place.
    pub fn replace(&self, pair: &Pair) {
        for (path, text) in [(&self.key, &pair.key_pem), (&self.cert, &pair.cert_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }

    /// The `[server.tls]` keys for these files.
    pub fn toml(&self) -> String {
        format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            self.cert.display().to_string(),
            self.key.display().to_string()
        )
    }
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).map(Result::unwrap).collect()
}

/// A rustls client config (ring, TLS 1.2 and 1.3) trusting `ca_pem`, offering `alpn`, with
/// `identity` as its client certificate if given.
pub fn client_tls(ca_pem: &str, alpn: &[&[u8]], identity: Option<&Pair>) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem) {
        roots.add(c).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => builder
            .with_client_auth_cert(
                certs(&pair.cert_pem),
                PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A reqwest client over `config`.
pub fn tls_http(config: rustls::ClientConfig) -> reqwest::Client {
    super::reqwest_builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// A TLS connection to `addr` (as `localhost`), handshake done.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// The serial of the certificate the server presented on `stream`, as x509 shows it.
pub fn peer_serial(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let der = &stream.get_ref().1.peer_certificates().unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.tbs_certificate.raw_serial().to_vec()
}

/// Send GET `path` on an HTTP/1.1 connection over `stream` and return the status, keeping the
/// connection for more requests.
pub async fn h1_over(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let (send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    send
}

pub async fn h1_get(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    path: &str,
) -> u16 {
    let req =
        http::Request::get(path).header("host", "localhost").body(http_body_util::Empty::new()).unwrap();
    send.send_request(req).await.unwrap().status().as_u16()
}

/// A directory laid out as cert-manager's Secret mounts it (`tls.crt`, `tls.key`, `ca.crt`),
/// with a server certificate of serial `serial` from a fresh CA; and that CA.
pub fn mounted_tls_secret(serial: u64) -> (PathBuf, Ca) {
    let ca = Ca::new("cert-manager test ca");
    let pair = ca.server(serial);
    let dir = super::temp_dir("tls-secret");
    std::fs::write(dir.join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &pair.key_pem).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    (dir, ca)
}
