//! Continuity sessions for operators, on the admin listener: `GET /sessions[?client=K]` lists
//! them (never a token), `POST /sessions/revoke?client=K[&id=ID]` revokes a client's sessions,
//! or one of them, at once. The guard (`guard`) has checked the admin token.
//! `oauth-shim sessions list|revoke` are clients of these routes.

use http::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::body::Body;
use crate::continuity::session::SessionId;

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

/// `None` for paths this module does not own.
pub async fn route<B>(app: &App, req: &Request<B>) -> Option<Response<Body>> {
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
    let snapshot = app.snapshot();
    let error = |status, msg: &str| super::routes::json(status, &serde_json::json!({ "error": msg }));
    Some(match (req.method(), path) {
        (&Method::GET, "/sessions") => {
            if !snapshot.continuity {
                return Some(super::routes::json(StatusCode::OK, &Listing { sessions: Vec::new() }));
            }
            let listed = match app.state().continuity(&snapshot) {
                Ok(c) => c.list(&snapshot, client.as_deref()).await,
                Err(e) => Err(e),
            };
            match listed {
                Ok(sessions) => super::routes::json(StatusCode::OK, &Listing { sessions }),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.description),
            }
        }
        (&Method::POST, "/sessions/revoke") => {
            let Some(client) = client else {
                return Some(error(StatusCode::BAD_REQUEST, "client is required"));
            };
            let id = match id.as_deref().map(SessionId::parse) {
                Some(None) => return Some(error(StatusCode::BAD_REQUEST, "id is not a session id")),
                Some(Some(id)) => Some(id),
                None => None,
            };
            if !snapshot.continuity {
                return Some(super::routes::json(StatusCode::OK, &Revoked { client, revoked: 0 }));
            }
            let revoked = match app.state().continuity(&snapshot) {
                Ok(c) => c.revoke(&snapshot, &client, id).await,
                Err(e) => Err(e),
            };
            match revoked {
                Ok(revoked) => super::routes::json(StatusCode::OK, &Revoked { client, revoked }),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.description),
            }
        }
        (_, "/sessions") => super::routes::method_not_allowed("GET"),
        _ => super::routes::method_not_allowed("POST"),
    })
}
