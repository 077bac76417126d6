//! `oauth-shim dev`: a local v2 stand-in plus oauth-shim configured against it, so anyone can
//! watch a legacy call being rewritten without a GoTo account. Prints ready-to-paste commands.

use std::net::SocketAddr;

use crate::app::{App, Runtime};
use crate::config::{ClientConfig, ClientMode, Config};
use crate::oauth::Secret;
use crate::server;
use crate::standin::{Standin, StandinConfig};

pub const DEMO_CLIENT: &str = "demo-client";
pub const DEMO_SECRET: &str = "demo-secret";
pub const DEMO_USER: &str = "demo@example.com";
pub const DEMO_PASSWORD: &str = "demo-password";
pub const DEMO_REDIRECT: &str = "http://localhost:3000/callback";

/// The config `dev` runs with: every upstream URL on the stand-in, one demo client in rewrite
/// mode with the password grant allowed, and a second one in deny mode.
pub fn dev_config(standin: &Standin, listen: SocketAddr, admin: SocketAddr) -> Result<Config, String> {
    let mut c = Config::default();
    c.server.listen = listen;
    c.admin.listen = admin;
    c.upstream.token_url = standin.token_url();
    c.upstream.authorize_url = standin.authorize_url();
    c.upstream.api_base = standin.api_base();
    c.clients = vec![
        ClientConfig {
            id: DEMO_CLIENT.into(),
            secret: Some(Secret::new(DEMO_SECRET)),
            mode: ClientMode::Rewrite,
            allow_password_grant: true,
            redirect_uri: Some(DEMO_REDIRECT.into()),
            ..Default::default()
        },
        ClientConfig {
            id: "retired-client".into(),
            secret: Some(Secret::new("retired-secret")),
            mode: ClientMode::Deny,
            ..Default::default()
        },
    ];
    c.validated().map_err(|e| e.0)
}

pub async fn run(listen: SocketAddr, admin: SocketAddr, standin_listen: SocketAddr) -> Result<(), String> {
    let standin = Standin::start(StandinConfig::default(), standin_listen)
        .await
        .map_err(|e| format!("cannot start the v2 stand-in on {standin_listen}: {e}"))?;
    let config = dev_config(&standin, listen, admin)?;
    crate::telemetry::init(&config.log);
    let app = App::new(Runtime::new(config).map_err(|e| e.0)?);
    let running = server::start(app).await.map_err(|e| format!("cannot bind {listen} or {admin}: {e}"))?;
    println!("{}", instructions(running.proxy_addr, running.admin_addr, &standin));
    server::run_until(running, server::shutdown_signal()).await;
    standin.shutdown();
    Ok(())
}

fn instructions(proxy: SocketAddr, admin: Option<SocketAddr>, standin: &Standin) -> String {
    let p = format!("http://{proxy}");
    let admin = admin.map(|a| format!("http://{a}")).unwrap_or_else(|| "(disabled)".into());
    format!(
        r#"
oauth-shim dev is running.
  proxy      {p}   (point legacy integrations here)
  admin      {admin}   (/healthz, /readyz)
  v2 stand-in {standin}   (plays GoTo's OAuth v2 API; client {DEMO_CLIENT} / {DEMO_SECRET})

Try a legacy integration's calls (copy and paste):

# 1. Direct login, legacy style: GET with user_id, only client_id, no secret
curl -s '{p}/oauth/access_token?grant_type=password&user_id={user}&password={DEMO_PASSWORD}&client_id={DEMO_CLIENT}'; echo

# 2. Authorization code: the browser step (the stand-in approves at once), then the exchange
CODE=$(curl -s -o /dev/null -w '%{{redirect_url}}' "$(curl -s -o /dev/null -w '%{{redirect_url}}' '{p}/oauth/authorize?client_id={DEMO_CLIENT}&state=xyz')" | sed 's/.*code=\([^&]*\).*/\1/')
curl -s -X POST -H 'Content-Type: application/json' -d "{{\"grant_type\":\"authorization_code\",\"code\":\"$CODE\",\"client_id\":\"{DEMO_CLIENT}\"}}" '{p}/oauth/access_token' | tee /tmp/oauth-shim-token.json; echo

# 3. Refresh, legacy form POST
RT=$(sed 's/.*"refresh_token":"\([^"]*\)".*/\1/' /tmp/oauth-shim-token.json)
curl -s -d "grant_type=refresh_token&refresh_token=$RT&client_id={DEMO_CLIENT}" '{p}/oauth/access_token'; echo

# 4. An API call, passed through untouched
AT=$(sed 's/.*"access_token":"\([^"]*\)".*/\1/' /tmp/oauth-shim-token.json)
curl -s -H "Authorization: Bearer $AT" '{p}/G2W/rest/v2/organizers/1/webinars'; echo

# 5. A client in deny mode is told to migrate
curl -s '{p}/oauth/access_token?grant_type=refresh_token&refresh_token=x&client_id=retired-client'; echo

Stop with Ctrl-C.
"#,
        standin = standin.api_base(),
        user = DEMO_USER.replace('@', "%40"),
    )
}
