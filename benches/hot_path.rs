//! Criterion benches for the pure functions on the legacy token path (issue #6): parameter
//! collection, translation to the v2 form, parsing and rendering the answer, and the refresh
//! cache key. The load-level view is `benches/load/run.sh`; see BENCHMARKS.md.
//!
//! `cargo bench --bench hot_path` (or `-- parse` etc. for one group).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use oauth_shim::config::{ClientConfig, LegacyConfig};
use oauth_shim::legacy;
use oauth_shim::legacy::to_v2;
use oauth_shim::oauth::Secret;
use oauth_shim::oauth::V2Token;

/// What the load bench's `shim-token` target sends.
const REFRESH_QUERY: &str =
    "grant_type=refresh_token&refresh_token=bench-refresh-token&client_id=bench-client";
const JSON_BODY: &[u8] = br#"{"grant_type":"refresh_token","refresh_token":"bench-refresh-token","client_id":"bench-client","client_secret":"bench-secret"}"#;
/// What the load bench's upstream answers (the v2 token shape,
/// docs/protocol.md#token-answers-legacy-and-v2).
const V2_BODY: &[u8] = br#"{"access_token":"eyJraWQiOiJiZW5jaCIsImFsZyI6IlJTMjU2In0.bench-access-token","token_type":"Bearer","refresh_token":"bench-refresh-token","expires_in":3600,"account_key":"3792314532151329654","account_type":"","email":"jk@example.com","firstName":"Jon","lastName":"Karmak","organizer_key":"1252383132521359990","version":"3"}"#;

fn client() -> ClientConfig {
    ClientConfig {
        id: "bench-client".into(),
        secret: Some(Secret::new("bench-secret")),
        ..Default::default()
    }
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.bench_function("legacy::collect GET query", |b| {
        b.iter(|| legacy::collect(black_box(Some(REFRESH_QUERY)), None, b"", None).unwrap())
    });
    g.bench_function("legacy::collect POST JSON", |b| {
        b.iter(|| legacy::collect(None, Some("application/json"), black_box(JSON_BODY), None).unwrap())
    });
    g.finish();
}

fn grant(c: &mut Criterion) {
    let (params, _) = legacy::collect(Some(REFRESH_QUERY), None, b"", None).unwrap();
    let client = client();
    c.bench_function("legacy::to_v2 refresh", |b| b.iter(|| to_v2(black_box(&params), &client).unwrap()));
}

fn render(c: &mut Criterion) {
    let legacy_cfg = LegacyConfig::default();
    let sent = Secret::new("bench-refresh-token");
    let token = V2Token::parse(V2_BODY).unwrap();
    let mut g = c.benchmark_group("render");
    g.bench_function("V2Token::parse", |b| b.iter(|| V2Token::parse(black_box(V2_BODY)).unwrap()));
    g.bench_function("render_legacy", |b| {
        b.iter(|| black_box(&token).render_legacy(Duration::ZERO, Some(&sent), &legacy_cfg))
    });
    g.bench_function("parse + render_legacy", |b| {
        b.iter(|| {
            V2Token::parse(black_box(V2_BODY)).unwrap().render_legacy(
                Duration::from_secs(7),
                Some(&sent),
                &legacy_cfg,
            )
        })
    });
    g.finish();
}

/// The refresh cache key as the refresh cache derives it: HMAC-SHA256 under the per-process key
/// of the length-prefixed scope (provider, client id) and the refresh token.
fn cache_key(c: &mut Criterion) {
    #[derive(Clone)]
    struct Answer;
    impl oauth_shim::refresh::Refreshed for Answer {
        fn lifetime(&self) -> Option<std::time::Duration> {
            None
        }
    }
    #[derive(Clone)]
    struct Failure;
    impl oauth_shim::refresh::RefreshFailure for Failure {
        fn evicts(&self) -> bool {
            false
        }
        fn internal() -> Self {
            Failure
        }
    }
    let cache =
        oauth_shim::refresh::RefreshCache::<Answer, Failure>::new(std::time::Duration::from_secs(60), 10);
    c.bench_function(
        "cache key HMAC-SHA256(len(provider) || provider || len(client_id) || client_id || refresh_token)",
        |b| {
            b.iter(|| cache.key_of(black_box(&["default", "bench-client"]), black_box("bench-refresh-token")))
        },
    );
}

criterion_group!(benches, parse, grant, render, cache_key);
criterion_main!(benches);
