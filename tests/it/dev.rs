//! `oauth-shim dev` as a user runs it: it starts, prints where it listens, and the printed legacy
//! call works.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{bin, client, fetch_url, poll_until, temp_dir};

#[tokio::test]
async fn dev_starts_and_its_printed_commands_work() {
    let mut child = bin()
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--standin-listen",
            "127.0.0.1:0",
            "--config-file",
        ])
        .arg(temp_dir("dev").join("oauth-shim.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("Stop with");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let text = lines.join("\n");
    // The first printed command is a legacy direct login; run it as printed (curl swapped for
    // reqwest so the test needs no curl).
    let cmd = lines
        .iter()
        .find(|l| l.starts_with("curl -s 'http://") && l.contains("grant_type=password"))
        .unwrap();
    let url = cmd.split('\'').nth(1).unwrap();
    let body: serde_json::Value = fetch_url(url).await.unwrap().json().await.unwrap();

    // The seed-000-style call: a code from the printed authorize URL, then the printed JSON
    // POST (with client_secret inside) to /oauth/v2/token, through oauth-shim.
    let code_cmd = lines.iter().find(|l| l.starts_with("CODE2=$(curl -s '")).unwrap();
    let authorize = code_cmd.split('\'').nth(1).unwrap();
    let code: serde_json::Value = fetch_url(authorize).await.unwrap().json().await.unwrap();
    let json_cmd = lines.iter().find(|l| l.contains("/oauth/v2/token") && l.contains("-d \"")).unwrap();
    let payload = json_cmd.split("-d \"").nth(1).unwrap().split("\" '").next().unwrap();
    let payload = payload.replace("\\\"", "\"").replace("$CODE2", code["code"].as_str().unwrap());
    let token_url = json_cmd.rsplit('\'').nth(1).unwrap();
    let resp = client()
        .post(token_url)
        .header("content-type", "application/json")
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{text}");
    let v2: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v2["expires_in"], 3600, "the v2 answer as it came: {v2}");
    assert_eq!(v2["token_type"], "Bearer");

    // The identity-host legacy call: Host selects the provider, the lookup fills the fields.
    let identity = lines.iter().find(|l| l.starts_with("curl -s -H 'Host: ")).unwrap();
    let host = identity.split('\'').nth(1).unwrap().strip_prefix("Host: ").unwrap();
    let identity_url = identity.split('\'').nth(3).unwrap();
    let legacy: serde_json::Value =
        client().get(identity_url).header("host", host).send().await.unwrap().json().await.unwrap();
    assert_eq!(legacy["organizer_key"], "18889842069694200", "{legacy}");
    assert_eq!(legacy["firstName"], "Jon");

    // The walkthrough's second half: the report shows the call, and editing the printed config
    // file to put the client in deny mode takes effect without a restart.
    let report = lines.iter().find(|l| l.contains("oauth-shim report --admin ")).unwrap();
    let admin = report.rsplit(' ').next().unwrap();
    let out = bin().args(["report", "--admin", admin]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().any(|l| l.starts_with("demo-client") && l.contains("rewrite")), "{table}");
    let config = lines.iter().find_map(|l| l.trim().strip_prefix("config")).unwrap().trim();
    let config = config.split("   ").next().unwrap();
    let edited =
        std::fs::read_to_string(config).unwrap().replacen("mode = \"rewrite\"", "mode = \"deny\"", 1);
    std::fs::write(config, edited).unwrap();
    let denied = poll_until(async || fetch_url(url).await.unwrap().status() == 400).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(denied, "editing the dev config flips the client to deny");
    assert_eq!(body["expires_in"], "3600", "{text}\n{body}");
    assert_eq!(body["version"], "2");
    assert!(text.contains("/oauth/authorize?client_id=demo-client"));
}
