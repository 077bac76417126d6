//! Upstream TLS with rustls: token calls and pass-through to an https upstream whose CA is given
//! by `upstream.ca_file`, with HTTP/2 negotiated by ALPN where the upstream offers it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use oauth_shim::app::App;
use oauth_shim::server;
use oauth_shim::snapshot::Snapshot;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

use crate::support::*;

const V2_TOKEN: &str = r#"{"access_token":"tls-at","token_type":"Bearer","refresh_token":"tls-rt","expires_in":3600,"organizer_key":"1","version":"3"}"#;

/// An https upstream on 127.0.0.1:0 with a fresh self-signed certificate for `localhost`.
/// Records (path, HTTP version, authorization) of each request.
async fn tls_upstream(alpn_h2: bool) -> (u16, String, Arc<Mutex<Vec<(String, Version, String)>>>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let mut tls =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
    tls.alpn_protocols =
        if alpn_h2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        record.lock().unwrap().push((req.uri().path().to_owned(), req.version(), auth));
                        let body =
                            if req.uri().path() == "/oauth/v2/token" { V2_TOKEN } else { r#"{"ok":true}"# };
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, cert_pem, seen)
}

async fn shim_for(port: u16, ca_pem: Option<&str>) -> Harness {
    let standin = start_standin(standin_config()).await;
    let mut config = shim_config(&standin, "");
    config.provider.token_url = Some(format!("https://localhost:{port}/oauth/v2/token"));
    config.provider.api_base = Some(format!("https://localhost:{port}"));
    if let Some(pem) = ca_pem {
        let path = temp_dir(&format!("ca-{port}")).join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        config.upstream.ca_file = Some(path);
    }
    let config = config.validated().unwrap();
    let app = App::new(Snapshot::new(config).unwrap());
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shim = server::start_on(app.clone(), proxy, None).unwrap();
    let base = format!("http://{}", shim.proxy_addr);
    Harness { standin, shim, app, base }
}

#[tokio::test]
async fn token_call_and_pass_through_over_tls_with_h2() {
    let (port, pem, seen) = tls_upstream(true).await;
    let h = shim_for(port, Some(&pem)).await;
    let body: serde_json::Value = get_json(
        h.url(&format!("/oauth/access_token?grant_type=refresh_token&refresh_token=x&client_id={ID}")),
    )
    .await;
    assert_eq!(body["access_token"], "tls-at");
    assert_eq!(body["expires_in"], "3600");
    let resp = http().get(h.url("/G2W/rest/v2/organizers/1/webinars")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), r#"{"ok":true}"#);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|(_, v, _)| *v == Version::HTTP_2), "{seen:?}");
    assert_eq!(decode_basic(&seen[0].2), (ID.to_string(), SECRET.to_string()));
}

#[tokio::test]
async fn http1_only_upstream_still_works_over_tls() {
    let (port, pem, seen) = tls_upstream(false).await;
    let h = shim_for(port, Some(&pem)).await;
    let resp = http().get(h.url("/G2M/rest/meetings")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(seen.lock().unwrap()[0].1, Version::HTTP_11);
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_refused() {
    let (port, _pem, seen) = tls_upstream(true).await;
    let h = shim_for(port, None).await;
    let resp = http()
        .get(h.url(&format!("/oauth/access_token?grant_type=refresh_token&refresh_token=x&client_id={ID}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let resp = http().get(h.url("/G2W/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let path = temp_dir("badca").join("ca.pem");
    std::fs::write(&path, "not a certificate").unwrap();
    let mut cfg = oauth_shim::config::UpstreamConfig::default();
    cfg.ca_file = Some(path);
    let err = cfg.extra_roots().unwrap_err().to_string();
    assert!(err.contains("upstream.ca_file"), "{err}");
}
