//! The TLS proxy port with the HTTP clients legacy integrations use, run as processes: curl
//! (HTTP/1.1 and h2 by ALPN), Node's `https`, Python `requests` with a CA bundle and Ruby
//! `Net::HTTP` each make a legacy password grant and a pass-through call with its token; and
//! `openssl s_client` shows the negotiated ALPN and that TLS 1.1 is refused. `.ci/run` installs
//! the tools on a fresh machine; a missing one fails the test.

use std::process::Command;

use crate::support::*;
use crate::tls_listener::{https, tls_shim};

/// The legacy password grant's path and query, as [`Harness::password_url`] has it.
fn login(h: &Harness) -> String {
    h.password_url().replacen(&h.base, "", 1)
}

/// Run `program` with `args` off the runtime (the shim serves on it meanwhile); its stdout and
/// stderr, after asserting it succeeded when `must_succeed`.
async fn run(program: &str, args: Vec<String>, must_succeed: bool) -> (bool, String, String) {
    let name = program.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&name)
            .args(&args)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{program} could not be run ({e}); .ci/run installs it"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    if must_succeed {
        assert!(out.status.success(), "{program} failed:\n{stdout}\n{stderr}");
    }
    (out.status.success(), stdout, stderr)
}

async fn shim(name: &str) -> (Ca, TlsFiles, Harness) {
    let ca = Ca::new(&format!("{name} ca"));
    let files = TlsFiles::write(&temp_dir(name), &ca, &ca.server(0x77));
    let (h, _) = tls_shim(name, &files, "", "").await;
    (ca, files, h)
}

#[tokio::test]
async fn curl_over_http1_and_h2() {
    let (_ca, files, h) = shim("tls-curl").await;
    let ca = files.ca.display().to_string();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (_, body, _) = run(
            "curl",
            vec!["-sS".into(), "--cacert".into(), ca.clone(), flag.into(), https(&h, &login(&h))],
            true,
        )
        .await;
        let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, out, _) = run(
            "curl",
            vec![
                "-sS".into(),
                "--cacert".into(),
                ca.clone(),
                flag.into(),
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code} %{http_version}".into(),
                "-H".into(),
                format!("Authorization: Bearer {token}"),
                https(&h, "/G2M/rest/meetings"),
            ],
            true,
        )
        .await;
        assert_eq!(out, format!("200 {version}"), "{flag}");
    }
}

const NODE: &str = r#"
const https = require('https'); const fs = require('fs');
const [, port, ca, login] = process.argv;
const agent = new https.Agent({ ca: fs.readFileSync(ca), keepAlive: true });
const get = (path, headers) => new Promise((resolve, reject) => {
  https.get({ host: 'localhost', port, path, agent, headers }, (r) => {
    let body = ''; r.on('data', (d) => body += d); r.on('end', () => resolve([r.statusCode, body, r.httpVersion]));
  }).on('error', reject);
});
(async () => {
  const [s1, b1] = await get(login, {});
  const token = JSON.parse(b1).access_token;
  const [s2, , v] = await get('/G2M/rest/meetings', { authorization: 'Bearer ' + token });
  console.log(`${s1} ${s2} ${v}`); agent.destroy();
})().catch((e) => { console.error(e); process.exit(1); });
"#;

const PYTHON: &str = r#"
import sys, requests
port, ca, login = sys.argv[1:]
s = requests.Session()
s.trust_env = False
r = s.get(f"https://localhost:{port}{login}", verify=ca)
token = r.json()["access_token"]
r2 = s.get(f"https://localhost:{port}/G2M/rest/meetings", headers={"Authorization": "Bearer " + token}, verify=ca)
print(r.status_code, r2.status_code, r2.raw.version)
try:
    requests.get(f"https://localhost:{port}/G2M/rest/meetings")
    print("verified without the CA bundle")
except requests.exceptions.SSLError:
    pass
"#;

const RUBY: &str = r##"
require "net/http"
require "json"
port, ca, login = ARGV
http = Net::HTTP.new("localhost", port.to_i)
http.use_ssl = true
http.ca_file = ca
http.verify_mode = OpenSSL::SSL::VERIFY_PEER
http.start do |h|
  r = h.get(login)
  token = JSON.parse(r.body)["access_token"]
  r2 = h.get("/G2M/rest/meetings", { "Authorization" => "Bearer #{token}" })
  puts "#{r.code} #{r2.code} #{r2.http_version}"
end
"##;

#[tokio::test]
async fn node_python_and_ruby_clients() {
    let (_ca, files, h) = shim("tls-langs").await;
    let args = |flag: &str, script: &str| {
        vec![
            flag.to_owned(),
            script.to_owned(),
            h.proxy_addr().port().to_string(),
            files.ca.display().to_string(),
            login(&h),
        ]
    };
    let (_, out, _) = run("node", args("-e", NODE), true).await;
    assert_eq!(out.trim(), "200 200 1.1", "node");
    let (_, out, _) = run("python3", args("-c", PYTHON), true).await;
    // urllib3 reports HTTP/1.1 as 11.
    assert_eq!(out.trim(), "200 200 11", "python");
    let (_, out, _) = run("ruby", args("-e", RUBY), true).await;
    assert_eq!(out.trim(), "200 200 1.1", "ruby");
}

#[tokio::test]
async fn openssl_s_client_sees_alpn_and_tls_1_1_is_refused() {
    let (_ca, files, h) = shim("tls-openssl").await;
    let base = |extra: &[&str]| {
        let mut args: Vec<String> =
            ["s_client", "-connect", &h.proxy_addr().to_string(), "-servername", "localhost", "-CAfile"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.push(files.ca.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let (_, out, _) = run("openssl", base(&["-alpn", "h2,http/1.1"]), true).await;
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    let (_, out, _) = run("openssl", base(&["-alpn", "http/1.1", "-tls1_2"]), true).await;
    assert!(out.contains("ALPN protocol: http/1.1") && out.contains("TLSv1.2"), "{out}");
    // OpenSSL 3 offers TLS 1.1 only at security level 0; the server must refuse it even then.
    let (ok, out, err) = run("openssl", base(&["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]), false).await;
    assert!(!ok, "{out}");
    // The hello went out and the server answered it with an alert (rustls sends
    // handshake_failure when it shares no version with the client); no session was made.
    assert!(
        err.contains("alert handshake failure") || err.contains("alert protocol version"),
        "{out}\n{err}"
    );
    assert!(out.contains("Cipher is (NONE)") && out.contains("no peer certificate available"), "{out}");
}
