//! `oauth-shim dev` as a user runs it: it starts, prints where it listens, and the printed legacy
//! call works.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn dev_starts_and_its_printed_commands_work() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oauth-shim"))
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
        .arg(std::env::temp_dir().join(format!("oauth-shim-dev-test-{}.toml", std::process::id())))
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
    let body: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();

    // The walkthrough's second half: the report shows the call, and editing the printed config
    // file to put the client in deny mode takes effect without a restart.
    let report = lines.iter().find(|l| l.contains("oauth-shim report --admin ")).unwrap();
    let admin = report.rsplit(' ').next().unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_oauth-shim")).args(["report", "--admin", admin]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().any(|l| l.starts_with("demo-client") && l.contains("rewrite")), "{table}");
    let config = lines.iter().find_map(|l| l.trim().strip_prefix("config")).unwrap().trim();
    let config = config.split("   ").next().unwrap();
    let edited =
        std::fs::read_to_string(config).unwrap().replacen("mode = \"rewrite\"", "mode = \"deny\"", 1);
    std::fs::write(config, edited).unwrap();
    let mut denied = false;
    for _ in 0..500 {
        if reqwest::get(url).await.unwrap().status() == 400 {
            denied = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(denied, "editing the dev config flips the client to deny");
    assert_eq!(body["expires_in"], "3600", "{text}\n{body}");
    assert_eq!(body["version"], "2");
    assert!(text.contains("/oauth/authorize?client_id=demo-client"));
}
