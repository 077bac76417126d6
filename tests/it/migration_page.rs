//! The migration page (docs/operating.md#running-a-migration): served by the admin listener at
//! `/ui` and to `Accept: text/html` on `/migration`, behind the admin token, under a strict
//! Content-Security-Policy, with a hostile client id escaped; and loaded by a real headless
//! Chromium, whose DOM is checked and whose screenshots are taken at a laptop's and a phone's size.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

const HOSTILE: &str = "<script>alert(1)</script>";

/// A shim with the default client (made active), an idle client, a client in deny mode that
/// still calls, and one legacy call from a hostile unknown id.
async fn fleet(extra: &str) -> Harness {
    let clients = "[[clients]]\nid = \"idle-app\"\nsecret = \"idle-secret\"\n\
                   [[clients]]\nid = \"retired-app\"\nsecret = \"retired-secret\"\nmode = \"deny\"\n";
    let h = Harness::start(standin_config(), &format!("{extra}{clients}")).await;
    assert_eq!(http().get(h.password_url()).send().await.unwrap().status(), 200);
    let call = |id: &str| {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "password")
            .append_pair("user_id", "u")
            .append_pair("password", "p")
            .append_pair("client_id", id)
            .finish();
        h.url(&format!("/oauth/access_token?{q}"))
    };
    assert_eq!(http().get(call(HOSTILE)).send().await.unwrap().status(), 401);
    assert_eq!(http().get(call("retired-app")).send().await.unwrap().status(), 400);
    h
}

#[tokio::test]
async fn the_page_is_escaped_under_a_strict_policy_and_behind_the_token() {
    let h = fleet("").await;
    for (path, accept) in [("/ui", "*/*"), ("/migration", "text/html,application/xhtml+xml,*/*;q=0.8")] {
        let resp = http().get(h.admin_url(path)).header("accept", accept).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
        let html = resp.text().await.unwrap();
        assert!(!html.contains(HOSTILE) && !html.contains("<script"), "nothing unescaped: {html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(!html.contains(" style=\""), "no style attribute: the policy would refuse it");
        for part in [
            "<table>",
            "<caption>",
            "<th scope=\"col\">Client</th>",
            "<th scope=\"row\">idle-app</th>",
            "role=\"img\"",
            "<title>",
        ] {
            assert!(html.contains(part), "{part} in {html}");
        }
        assert!(html.contains("<form method=\"get\" action=\"/ui\""), "{html}");
    }
    let json = http().get(h.admin_url("/migration")).send().await.unwrap();
    assert_eq!(json.headers()["content-type"], "application/json");

    let key = temp_dir("page-token").join("token");
    std::fs::write(&key, "page-admin-token").unwrap();
    let guarded = fleet(&format!("[admin]\ntoken_file = {key:?}\n")).await;
    assert_eq!(http().get(guarded.admin_url("/ui")).send().await.unwrap().status(), 401);
    let ok = http().get(guarded.admin_url("/ui")).bearer_auth("page-admin-token").send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

/// `chromium` on `PATH`, if installed.
fn chromium() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("chromium"))
        .find(|p| p.is_file())
}

/// Run headless Chromium with `args` on `url` (its own profile directory), bounded to 90 s.
async fn run_chromium(bin: &Path, args: &[String], url: &str) -> String {
    let profile = temp_dir("chromium-profile");
    let out = profile.join("stdout");
    let child = std::process::Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let mut status = None;
    for _ in 0..900 {
        status = guard.0.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(status.expect("chromium finishes within 90 s").success(), "chromium {args:?} failed");
    std::fs::read_to_string(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_renders_the_rows_the_verdicts_and_the_hostile_id_as_text() {
    let Some(bin) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed (Debian package `chromium`; .ci/run installs it)");
        return;
    };
    let h = fleet("").await;
    let url = h.admin_url("/ui?since=14d");
    let dom = run_chromium(&bin, &["--dump-dom".into()], &url).await;
    for id in [ID, "idle-app", "retired-app"] {
        assert!(dom.contains(&format!("<th scope=\"row\">{id}</th>")), "row {id}: {dom}");
    }
    assert!(dom.contains(">active</span>") && dom.contains(">never seen</span>"), "{dom}");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the hostile id as text: {dom}");
    assert!(!dom.contains("<script"), "no script element in the rendered DOM");
    assert!(dom.contains("14 days"), "{dom}");

    let shots = temp_dir("page-screenshots");
    for (w, hgt) in [(1280, 800), (390, 844)] {
        let file = shots.join(format!("migration-{w}x{hgt}.png"));
        let args = [format!("--screenshot={}", file.display()), format!("--window-size={w},{hgt}")];
        run_chromium(&bin, &args, &url).await;
        let png = std::fs::read(&file).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{}", file.display());
        // The PNG header's width and height (IHDR): the page was drawn at the size asked for.
        let size = (
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            u32::from_be_bytes(png[20..24].try_into().unwrap()),
        );
        assert_eq!(size, (w, hgt), "{}", file.display());
        eprintln!("screenshot {} ({} bytes)", file.display(), png.len());
    }
}
