//! The monitoring examples in `deploy/monitoring/` (docs/operating.md#metrics): the Grafana
//! dashboard is valid JSON and the Prometheus rules valid YAML of the rules-file shape, and every
//! `oauth_shim_` metric either names is one a running oauth-shim (with the Redis backend, so
//! the `state` metrics are there) exports.

use std::collections::BTreeSet;

use crate::support::*;

const DASHBOARD: &str = include_str!("../../deploy/monitoring/grafana-dashboard.json");
const RULES: &str = include_str!("../../deploy/monitoring/prometheus-rules.yaml");

/// Every `oauth_shim_…` name in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("oauth_shim_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        into.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
}

/// Brackets of every kind close in order, outside quoted label values.
fn balanced(expr: &str) -> bool {
    let (mut stack, mut quoted) = (Vec::new(), false);
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' | '{' | '[' => stack.push(c),
            ')' | '}' | ']' => {
                let open = stack.pop();
                if open
                    != Some(match c {
                        ')' => '(',
                        '}' => '{',
                        _ => '[',
                    })
                {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && !quoted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alert_rules_parse_and_name_exported_metrics() {
    let mut used = BTreeSet::new();
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 5);
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("targets in {panel}"));
        assert!(!targets.is_empty() && panel["title"].is_string());
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(balanced(expr), "{expr}");
            metric_names(expr, &mut used);
        }
    }

    let docs = yaml_rust2::YamlLoader::load_from_str(RULES).expect("the rules are YAML");
    let groups = docs[0]["groups"].as_vec().expect("a rules file: groups");
    let mut alerts = Vec::new();
    for group in groups {
        assert!(group["name"].as_str().is_some());
        for rule in group["rules"].as_vec().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            assert!(balanced(expr), "{expr}");
            assert!(rule["annotations"]["summary"].as_str().is_some());
            metric_names(expr, &mut used);
            alerts.push(rule["alert"].as_str().expect("alert").to_owned());
        }
    }
    for wanted in ["UpstreamTokenEndpointFailing", "RefreshFallbackInUse", "DenyClientStillCalling"] {
        assert!(alerts.iter().any(|a| a.ends_with(wanted)), "{wanted} in {alerts:?}");
    }

    // What a running oauth-shim exports, after a call so every request family has samples.
    let redis = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    let h = replicas(&standin, &shim_config(&standin, &redis_state_toml(&redis)), 1).await.remove(0);
    assert_eq!(http().get(h.password_url()).send().await.unwrap().status(), 200);
    let text = get_text(h.admin_url("/metrics")).await;
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next(),
            None if !line.starts_with('#') => line.split(['{', ' ']).next(),
            None => None,
        };
        exported.extend(name.map(str::to_owned));
    }
    let missing: Vec<_> = used
        .iter()
        .filter(|m| {
            !exported.contains(*m) && !m.strip_suffix("_bucket").is_some_and(|b| exported.contains(b))
        })
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{text}");
    assert!(used.len() >= 8, "{used:?}");
}
