//! `oauth-shim dev`: a local v2 stand-in plus oauth-shim configured against it, so anyone can
//! watch a legacy call being rewritten without a GoTo account. Prints ready-to-paste commands.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::devtools::standin::{Standin, StandinConfig};

pub(crate) const DEMO_CLIENT: &str = "demo-client";
pub(crate) const DEMO_SECRET: &str = "demo-secret";
pub(crate) const DEMO_USER: &str = "demo@example.com";
pub(crate) const DEMO_PASSWORD: &str = "demo-password";
pub(crate) const DEMO_REDIRECT: &str = "http://localhost:3000/callback";

/// The `Host` that selects the identity-host provider in `dev`.
pub(crate) const IDENTITY_HOST: &str = "authentication.logmeininc.com";

/// The config `dev` runs with, as a TOML file the user can edit while it runs: every upstream
/// URL on the stand-in, one demo client in rewrite mode with the password grant allowed, and a
/// second one in deny mode; a second provider plays GoTo's identity host (selected by `Host`),
/// with the legacy-fields lookup on the stand-in's user endpoint and the demo client again.
/// Secrets are inline: they are the stand-in's demo secrets.
pub(crate) fn dev_config_toml(standin: &Standin, listen: SocketAddr, admin: SocketAddr) -> String {
    format!(
        r#"# oauth-shim dev: this file is watched. Edit it (e.g. a client's mode) and save;
# the change applies to new requests within a couple of seconds, without a restart.

[server]
listen = "{listen}"

[admin]
listen = "{admin}"

[provider]
token_url = "{token}"
authorize_url = "{authz}"
api_base = "{api}"

[reload]
watch = true
watch_interval = "1s"

[migration]
dir = "{record}"

[[clients]]
id = "{DEMO_CLIENT}"
secret = "{DEMO_SECRET}"
mode = "rewrite"              # rewrite | passthrough | deny
allow_password_grant = true
redirect_uri = "{DEMO_REDIRECT}"

[[clients]]
id = "retired-client"
secret = "retired-secret"
mode = "deny"

# GoTo's identity host, as the stand-in plays it: requests with `Host: {IDENTITY_HOST}`
# use it. Its token answers lack organizer_key and the names; the lookup fills them.
[[providers]]
name = "identity"
hosts = ["{IDENTITY_HOST}"]
token_url = "{identity_token}"
authorize_url = "{identity_authz}"
api_base = "{api}"
[providers.legacy_fields]
url = "{me}"
organizer_key = "/key"
account_key = "/accountKey"
firstName = "/firstName"
lastName = "/lastName"
email = "/email"

[[clients]]
id = "{DEMO_CLIENT}"
provider = "identity"
secret = "{DEMO_SECRET}"
allow_password_grant = true
"#,
        token = standin.token_url(),
        authz = standin.authorize_url(),
        api = standin.api_base(),
        identity_token = standin.identity_token_url(),
        identity_authz = standin.identity_authorize_url(),
        me = standin.me_url(),
        record = std::env::temp_dir().join("oauth-shim-dev-record").display(),
    )
}

/// Where `dev` writes its config when `--config-file` is not given.
pub(crate) fn default_config_file() -> PathBuf {
    std::env::temp_dir().join("oauth-shim-dev.toml")
}

pub(crate) async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    standin_listen: SocketAddr,
    config_file: Option<PathBuf>,
) -> Result<(), String> {
    let standin = Standin::start(StandinConfig::default(), standin_listen)
        .await
        .map_err(|e| format!("cannot start the v2 stand-in on {standin_listen}: {e}"))?;
    let path = config_file.unwrap_or_else(default_config_file);
    std::fs::write(&path, dev_config_toml(&standin, listen, admin))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let config = Config::load(&path).map_err(|e| format!("{}: {}", path.display(), e.0))?;
    let started = crate::boot::start(config, path.clone()).await?;
    let running = &started.running;
    // Not println!: a reader that closes our stdout (a pipe) must not stop the server.
    let text = instructions(running.proxy_addr, running.admin_addr, &standin, &path);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    drop(out);
    crate::boot::run_until_signal(started).await;
    standin.shutdown();
    Ok(())
}

fn instructions(proxy: SocketAddr, admin: Option<SocketAddr>, standin: &Standin, config: &Path) -> String {
    let p = format!("http://{proxy}");
    let admin = admin.map(|a| format!("http://{a}")).unwrap_or_else(|| "(disabled)".into());
    let config = config.display();
    format!(
        r#"
oauth-shim dev is running.
  proxy      {p}   (point legacy integrations here)
  admin      {admin}   (/healthz, /readyz, /metrics, /migration, /reload)
  config     {config}   (watched: edit and save to change it live)
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

# 6. Who still speaks legacy, and how (also: curl -s {admin}/migration, {admin}/metrics)
{exe} report --admin {admin}

# 7. Flip {DEMO_CLIENT} to deny by editing the config, then repeat call 1: it is now refused
sed -i.bak 's/^mode = "rewrite"/mode = "deny"/' '{config}'

# 8. A v2 integration as the GoToWebinar write-up codes it: a code from the (v2) authorize URL,
#    then axios.post(tokenUrl, {{...}}): a JSON body with client_secret inside, which a v2
#    server refuses. oauth-shim sends it as a form with Basic; the v2 answer comes back as is.
CODE2=$(curl -s '{standin}/oauth/v2/authorize?client_id={DEMO_CLIENT}&response_type=code' | sed 's/.*"code":"\([^"]*\)".*/\1/')
curl -s -H 'Content-Type: application/json' -d "{{\"grant_type\":\"authorization_code\",\"code\":\"$CODE2\",\"client_id\":\"{DEMO_CLIENT}\",\"client_secret\":\"{DEMO_SECRET}\"}}" '{p}/oauth/v2/token'; echo

# 9. GoTo's identity host, selected by Host: a legacy call gets organizer_key and the names
#    from the lookup, though that host's token answer lacks them
curl -s -H 'Host: {IDENTITY_HOST}' '{p}/oauth/access_token?grant_type=password&user_id={user}&password={DEMO_PASSWORD}&client_id={DEMO_CLIENT}'; echo

Stop with Ctrl-C.
"#,
        standin = standin.api_base(),
        user = DEMO_USER.replace('@', "%40"),
        // The running binary itself, so the command works under `cargo run` too.
        exe = std::env::current_exe().map_or_else(|_| "oauth-shim".into(), |p| p.display().to_string()),
    )
}
