//! Continuity sessions for operators, on the admin listener: `GET /sessions[?client=K]` lists
//! them (never a token), `POST /sessions/revoke?client=K[&id=ID]` revokes a client's sessions,
//! or one of them, at once. The guard (`guard`) has checked the admin token; errors are answered
//! by the app's rescue.
//! `oauth-shim sessions list|revoke` are clients of these routes.

use http::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::body::Body;
use crate::continuity::session::SessionId;
use crate::error::ShimError;

/// The answer of `GET /sessions`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Listing {
    pub sessions: Vec<crate::continuity::SessionInfo>,
}

/// The answer of `POST /sessions/revoke`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Revoked {
    pub client: String,
    pub revoked: usize,
}

/// `None` for paths this module does not own; an error is the rescue's to answer
/// (`app::rescue_admin`).
pub(crate) async fn route<B>(app: &App, req: &Request<B>) -> Option<Result<Response<Body>, ShimError>> {
    let path = req.uri().path();
    if path != "/sessions" && path != "/sessions/revoke" {
        return None;
    }
    let (mut client, mut id) = (None, None);
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match &*k {
            "client" if !v.is_empty() => client = Some(v.into_owned()),
            "id" if !v.is_empty() => id = Some(v.into_owned()),
            _ => {}
        }
    }
    Some(match (req.method(), path) {
        (&Method::GET, "/sessions") => list(app, client.as_deref()).await,
        (&Method::POST, "/sessions/revoke") => revoke(app, client, id.as_deref()).await,
        (_, "/sessions") => Ok(super::routes::method_not_allowed("GET")),
        _ => Ok(super::routes::method_not_allowed("POST")),
    })
}

/// `GET /sessions[?client=K]`.
async fn list(app: &App, client: Option<&str>) -> Result<Response<Body>, ShimError> {
    let snapshot = app.snapshot();
    if !snapshot.continuity {
        return Ok(super::routes::json(StatusCode::OK, &Listing { sessions: Vec::new() }));
    }
    let sessions = app.state().continuity(&snapshot)?.list(&snapshot, client).await?;
    Ok(super::routes::json(StatusCode::OK, &Listing { sessions }))
}

/// `POST /sessions/revoke?client=K[&id=ID]`.
async fn revoke(app: &App, client: Option<String>, id: Option<&str>) -> Result<Response<Body>, ShimError> {
    let client = client.ok_or_else(|| ShimError::invalid_request("client is required"))?;
    let id = match id {
        Some(id) => {
            Some(SessionId::parse(id).ok_or_else(|| ShimError::invalid_request("id is not a session id"))?)
        }
        None => None,
    };
    let snapshot = app.snapshot();
    if !snapshot.continuity {
        return Ok(super::routes::json(StatusCode::OK, &Revoked { client, revoked: 0 }));
    }
    let revoked = app.state().continuity(&snapshot)?.revoke(&snapshot, &client, id).await?;
    Ok(super::routes::json(StatusCode::OK, &Revoked { client, revoked }))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::snapshot::Snapshot;

    /// The answer of the sessions routes to `method uri`.
    async fn answer(app: &App, method: Method, uri: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::builder().method(method).uri(uri).body(()).unwrap();
        let resp = route(app, &req).await.expect("a sessions path").unwrap_or_else(crate::app::rescue_admin);
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// A sessions error is answered by the rescue with its own status and code: here an internal
    /// one (continuity on, but no `[state]` key to open sessions with, which validation never
    /// lets through) is a 500, and a caller's mistake a 400, never a blanket 503.
    #[tokio::test]
    async fn a_sessions_error_is_answered_with_its_own_status() {
        let dir = std::env::temp_dir().join(format!("oauth-shim-admin-sessions-{}", std::process::id()));
        let mut config = crate::config::Config::default();
        config.provider.api_base = Some("http://127.0.0.1:9".into());
        config.provider.token_url = Some("http://127.0.0.1:9/oauth/v2/token".into());
        config.provider.authorize_url = Some("http://127.0.0.1:9/oauth/v2/authorize".into());
        config.continuity.dir = dir.clone();
        let mut snapshot =
            Snapshot::new(config.validated().expect("a valid config")).expect("a valid config");
        snapshot.continuity = true;
        assert!(snapshot.state_keys.is_none());
        let app = App::new(snapshot);

        let (status, body) = answer(&app, Method::GET, "/sessions").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(body["error"], "server_error", "{body}");
        let (status, body) = answer(&app, Method::POST, "/sessions/revoke?client=c").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        let (status, body) = answer(&app, Method::POST, "/sessions/revoke").await;
        assert_eq!((status, &body["error"]), (StatusCode::BAD_REQUEST, &"invalid_request".into()), "{body}");
        let (status, body) = answer(&app, Method::POST, "/sessions/revoke?client=c&id=zz").await;
        assert_eq!((status, &body["error"]), (StatusCode::BAD_REQUEST, &"invalid_request".into()), "{body}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
