//! The migration page: `GET /ui`, or `GET /migration` asked for `text/html`. One server-rendered
//! HTML page, no script and no external asset, under a Content-Security-Policy that allows only
//! its own inline style (by hash): the fleet's verdict counts, the filters as a plain GET form,
//! and a table with a row per client holding a daily chart of legacy calls drawn as inline SVG
//! (with a text alternative). Everything taken from the record or the config is escaped.

use std::fmt::Write;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderName, Response};

use crate::body::{self, Body};
use crate::config::Config;
use crate::ops::migration::{ClientReport, Feature, Query, Report, Verdict};

const STYLE: &str = "\
body{font:15px/1.4 system-ui,sans-serif;margin:1rem auto;max-width:80rem;padding:0 1rem;color:#1b1b1b;background:#fff}\
h1{font-size:1.4rem;margin:.2rem 0}\
p.meta{color:#555;margin:.2rem 0 1rem}\
ul.fleet{display:flex;flex-wrap:wrap;gap:.6rem;list-style:none;padding:0;margin:0 0 1rem}\
ul.fleet li{border:1px solid #ccc;border-radius:.4rem;padding:.4rem .8rem}\
ul.fleet strong{font-size:1.3rem;margin-right:.3rem}\
form{display:flex;flex-wrap:wrap;gap:.8rem;align-items:end;margin:0 0 1rem}\
label{display:flex;flex-direction:column;font-size:.85rem;color:#333}\
select,button{font:inherit;padding:.25rem .4rem}\
table{border-collapse:collapse;width:100%}\
caption{text-align:left;font-weight:600;padding:.3rem 0}\
th,td{border-bottom:1px solid #ddd;padding:.4rem .5rem;text-align:left;vertical-align:middle}\
thead th{background:#f3f3f3;font-size:.85rem}\
th[scope=row]{font-family:ui-monospace,monospace;font-weight:600;word-break:break-all}\
td.num{text-align:right;font-variant-numeric:tabular-nums}\
svg{display:block}\
.v{display:inline-block;border-radius:.3rem;padding:.1rem .45rem;white-space:nowrap;font-weight:600}\
.quiet{background:#dff3e3;color:#0f5323}.active{background:#fde2d9;color:#8a2a0a}.never_seen{background:#eee;color:#444}\
.none{color:#777}\
@media (max-width:700px){thead{position:absolute;left:-9999px}table,tbody,tr,th[scope=row],td{display:block;width:auto}\
tr{border:1px solid #ccc;border-radius:.4rem;margin:0 0 .8rem;padding:.3rem}\
th[scope=row],td{border:0;padding:.2rem .3rem}td.num{text-align:left}\
td::before{content:attr(data-label) \": \";font-size:.8rem;color:#555}\
caption{display:block}td svg{display:inline-block;vertical-align:middle}}";

/// `'sha256-…'` of [`STYLE`], for the policy.
fn style_hash() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(STYLE.as_bytes());
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// The page's answer, with its security headers.
pub(super) fn respond(report: &Report, config: &Config, query: &Query) -> Response<Body> {
    let mut resp = Response::new(body::full(bytes::Bytes::from(render(report, config, query))));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let csp = format!(
        "default-src 'none'; style-src {}; img-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        style_hash()
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(HeaderName::from_static("content-security-policy"), v);
    }
    h.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    h.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer"));
    h.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    resp
}

/// HTML-escape `s` (text and attribute values alike).
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn render(report: &Report, config: &Config, query: &Query) -> String {
    let mut o = String::with_capacity(8192);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>oauth-shim: migration</title><style>{STYLE}</style></head><body><main>\
         <h1>Migration to OAuth v2</h1><p class=\"meta\">Legacy calls over the last {} days (from {} UTC), \
         record: {}{}. Generated {}.</p>",
        report.window_days,
        esc(&report.since),
        esc(&report.store),
        if report.partial { " (unreadable: this replica's recent counts only)" } else { "" },
        esc(&report.generated_at),
    );
    let f = report.fleet;
    let _ = write!(
        o,
        "<ul class=\"fleet\" aria-label=\"The fleet\">\
         <li><strong>{}</strong>quiet</li><li><strong>{}</strong>active</li><li><strong>{}</strong>never seen</li></ul>",
        f.quiet, f.active, f.never_seen
    );
    filters(&mut o, report, config, query);
    let _ = write!(
        o,
        "<table><caption>Clients ({} shown)</caption><thead><tr><th scope=\"col\">Client</th>\
         <th scope=\"col\">Provider</th><th scope=\"col\">Mode</th><th scope=\"col\">Legacy calls per day</th>\
         <th scope=\"col\">Legacy calls</th><th scope=\"col\">Features used</th>\
         <th scope=\"col\">Last legacy call</th><th scope=\"col\">Verdict</th></tr></thead><tbody>",
        report.clients.len()
    );
    for c in &report.clients {
        row(&mut o, c, &report.since);
    }
    if report.clients.is_empty() {
        o.push_str("<tr><td colspan=\"8\" class=\"none\">No client matches these filters.</td></tr>");
    }
    o.push_str("</tbody></table></main></body></html>\n");
    o
}

fn filters(o: &mut String, report: &Report, config: &Config, query: &Query) {
    let mut providers: Vec<&str> = std::iter::once(crate::config::DEFAULT_PROVIDER)
        .chain(config.providers.iter().map(|p| p.name.as_str()))
        .collect();
    providers.dedup();
    let select = |o: &mut String, name: &str, label: &str, options: &[(String, String)], chosen: &str| {
        let _ = write!(o, "<label>{label}<select name=\"{name}\">");
        for (value, text) in options {
            let sel = if value == chosen { " selected" } else { "" };
            let _ = write!(o, "<option value=\"{}\"{sel}>{}</option>", esc(value), esc(text));
        }
        o.push_str("</select></label>");
    };
    o.push_str("<form method=\"get\" action=\"/ui\" aria-label=\"Filters\">");
    let mut options = vec![(String::new(), "all".to_owned())];
    options.extend(providers.iter().map(|p| ((*p).to_owned(), (*p).to_owned())));
    select(o, "provider", "Provider", &options, query.provider.as_deref().unwrap_or_default());
    let verdicts: Vec<(String, String)> =
        [("", "all"), ("quiet", "quiet"), ("active", "active"), ("never_seen", "never seen")]
            .iter()
            .map(|(v, t)| ((*v).to_owned(), (*t).to_owned()))
            .collect();
    select(o, "verdict", "Verdict", &verdicts, query.verdict.map_or("", Verdict::as_str));
    let retention = config.migration.retention_days();
    let mut windows: Vec<u32> = [7, 14, 30, 90, 180, 365].into_iter().filter(|d| *d <= retention).collect();
    if !windows.contains(&report.window_days) {
        windows.push(report.window_days);
        windows.sort_unstable();
    }
    let windows: Vec<(String, String)> =
        windows.iter().map(|d| (format!("{d}d"), format!("{d} days"))).collect();
    select(o, "since", "Window", &windows, &format!("{}d", report.window_days));
    o.push_str("<button type=\"submit\">Apply</button></form>");
}

fn row(o: &mut String, c: &ClientReport, since: &str) {
    let id = c.id.as_deref().map_or_else(|| "(other unknown ids)".to_owned(), esc);
    let provider = if c.provider.is_empty() { "any".to_owned() } else { esc(&c.provider) };
    let features: Vec<String> = Feature::ALL
        .iter()
        .filter(|f| c.count(**f) > 0)
        .map(|f| format!("{} {}", f.short(), c.count(*f)))
        .collect();
    let features = if features.is_empty() {
        "<span class=\"none\">none</span>".to_owned()
    } else {
        esc(&features.join(", "))
    };
    let last =
        c.last_legacy_call.as_deref().map_or_else(|| "<span class=\"none\">never</span>".to_owned(), time);
    let _ = write!(
        o,
        "<tr><th scope=\"row\">{id}</th><td data-label=\"Provider\">{provider}</td><td data-label=\"Mode\">{}</td>\
         <td data-label=\"Per day\">{}</td><td data-label=\"Legacy calls\" class=\"num\">{}</td>\
         <td data-label=\"Features\">{features}</td><td data-label=\"Last legacy call\">{last}</td>\
         <td data-label=\"Verdict\"><span class=\"v {}\">{}</span></td></tr>",
        esc(&c.mode),
        chart(&c.daily, since),
        c.legacy_calls,
        c.verdict.as_str(),
        esc(&c.verdict_text()),
    );
}

/// An RFC 3339 time as `<time>`, shown as `YYYY-MM-DD HH:MM UTC`.
fn time(rfc3339: &str) -> String {
    let shown = match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(day), Some(hm)) => format!("{day} {hm} UTC"),
        _ => rfc3339.to_owned(),
    };
    format!("<time datetime=\"{}\">{}</time>", esc(rfc3339), esc(&shown))
}

/// The chart's width on the page, whatever the window (its bars are scaled to fit).
const CHART_WIDTH: u32 = 140;

/// A bar per day, drawn to the row's own peak, with a text alternative.
fn chart(daily: &[u64], since: &str) -> String {
    let peak = daily.iter().copied().max().unwrap_or(0);
    let total: u64 = daily.iter().sum();
    let (bar, gap, height) = (4u32, 1u32, 24u32);
    let width = (daily.len() as u32 * (bar + gap)).max(1);
    let label = format!("{total} legacy calls in {} days from {since}; busiest day {peak}", daily.len());
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"{}\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" preserveAspectRatio=\"none\">\
         <title>{}</title><rect x=\"0\" y=\"{}\" width=\"{width}\" height=\"1\" fill=\"#bbb\"/>",
        esc(&label),
        CHART_WIDTH,
        esc(&label),
        height - 1
    );
    for (i, n) in daily.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        let h = ((*n as f64 / peak as f64) * f64::from(height - 2)).ceil().max(2.0) as u32;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"{bar}\" height=\"{h}\" fill=\"#c2410c\"/>",
            i as u32 * (bar + gap),
            height - 1 - h
        );
    }
    svg.push_str("</svg>");
    svg
}
