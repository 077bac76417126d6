//! The docs hold: every relative link and heading anchor in the repository's markdown resolves,
//! so does every `docs/….md#anchor` a code comment cites, and every config key the code accepts
//! is documented in `docs/configuration.md`: a row for it in the table of its table's section.
//!
//! Anchors are GitHub's: the heading's text lowercased, punctuation but `-` and `_` removed,
//! spaces turned into `-`, and a repeated heading suffixed `-1`, `-2`, …. The config keys are
//! derived from the code, not from a list: a `Config` with every optional part filled in is
//! serialized to find its tables, and each table's accepted keys are what serde's
//! `deny_unknown_fields` names when a probe key is refused there (its list holds every key
//! deserialization accepts, aliases and keys skipped on serialize included; `#[serde(skip)]`
//! fields, which no file can set, are not in it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use oauth_shim::config::{ClientConfig, Config, LegacyFieldsConfig, Preset, ProviderConfig};
use oauth_shim::oauth::Secret;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files under `dir` whose name ends in one of `exts`, outside build output, VCS data and the
/// fuzz corpora.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "corpus" | "artifacts" | "node_modules") {
                    stack.push(path);
                }
            } else if exts.iter().any(|e| name.ends_with(e)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// The lines of a markdown text outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// A prose line's heading level and text, if it is an ATX heading.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    let text = line[level..].strip_prefix(' ')?;
    (1..=6).contains(&level).then(|| (level, text.trim().trim_end_matches('#').trim()))
}

/// The anchor GitHub gives a heading (before de-duplication).
fn slug(heading: &str) -> String {
    // Rendered text: a link shows its text only.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(at) = rest.find("](") {
        let close = rest[at..].find(')').map_or(rest.len(), |c| at + c + 1);
        text.push_str(&rest[..at]);
        rest = &rest[close..];
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a markdown text's headings, repeated ones suffixed as GitHub does.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose(text) {
        if let Some((_, h)) = heading(line) {
            let base = slug(h);
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 { base } else { format!("{base}-{n}") });
            *n += 1;
        }
    }
    out
}

/// A prose line with its inline code spans blanked (a link inside one is not a link).
fn without_code(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// The targets of a markdown text's inline links and reference definitions, with their lines.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose(text) {
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push((n, target.trim_matches(['<', '>']).to_owned()));
            rest = &after[end..];
        }
        let t = line.trim_start();
        if let Some(def) = t.strip_prefix('[').and_then(|d| d.split_once("]:"))
            && !def.0.starts_with('^')
        {
            out.push((n, def.1.split_whitespace().next().unwrap_or("").to_owned()));
        }
    }
    out
}

/// Why `target` (relative to `from`'s folder, `#anchor` optional) does not resolve, if it
/// does not. Targets must stay inside the repository.
fn broken(from: &Path, target: &str, cache: &mut BTreeMap<PathBuf, BTreeSet<String>>) -> Option<String> {
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let file = if path.is_empty() { from.to_path_buf() } else { from.parent().unwrap().join(path) };
    let Ok(file) = file.canonicalize() else { return Some("no such file".into()) };
    if !file.starts_with(root().canonicalize().unwrap()) {
        return Some("outside the repository".into());
    }
    let anchor = anchor?;
    if file.extension().is_none_or(|e| e != "md") {
        return Some("an anchor into a file that is not markdown".into());
    }
    let known = cache.entry(file.clone()).or_insert_with(|| anchors(&read(&file)));
    (!known.contains(anchor)).then(|| format!("{} has no heading with the anchor #{anchor}", rel(&file)))
}

#[test]
fn every_relative_link_and_anchor_in_the_markdown_resolves() {
    let mut cache = BTreeMap::new();
    let mut failures = Vec::new();
    let docs = files(root(), &[".md"]);
    assert!(docs.len() >= 7, "found only {docs:?}");
    for file in &docs {
        for (line, target) in link_targets(&read(file)) {
            if target.is_empty() {
                failures.push(format!("{}:{line}: an empty link target", rel(file)));
                continue;
            }
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            if let Some(why) = broken(file, &target, &mut cache) {
                failures.push(format!("{}:{line}: ({target}): {why}", rel(file)));
            }
        }
    }
    assert!(failures.is_empty(), "broken links:\n{}", failures.join("\n"));
}

/// Where a source line cites a doc: each `docs/<file>.md#<anchor>` (path from the repository root), and
/// each section-number citation, which no anchor can check.
fn citations(line: &str) -> (Vec<String>, bool) {
    let path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    let anchor_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    let mut cited = Vec::new();
    for (at, _) in line.match_indices(".md#") {
        let start = line[..at]
            .char_indices()
            .rev()
            .find(|&(_, c)| !path_char(c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let tail = &line[at + 4..];
        let end = tail.find(|c: char| !anchor_char(c)).unwrap_or(tail.len());
        if start < at {
            cited.push(format!("{}.md#{}", &line[start..at], &tail[..end]));
        }
    }
    let numbered = line.contains(concat!("SP", "EC §"))
        || line.match_indices(".md").any(|(at, _)| line[at + 3..].trim_start_matches('`').starts_with(" §"));
    (cited, numbered)
}

#[test]
fn every_doc_anchor_cited_in_the_code_resolves() {
    let mut cache = BTreeMap::new();
    let mut failures = Vec::new();
    let mut count = 0;
    let mut sources = Vec::new();
    for dir in ["src", "tests", "benches", "fuzz/fuzz_targets", "config", "deploy", ".ci"] {
        sources.extend(files(&root().join(dir), &[".rs", ".toml", ".yaml", "run"]));
    }
    sources.push(root().join("Dockerfile"));
    let readme = root().join("README.md");
    for file in &sources {
        for (n, line) in read(file).lines().enumerate() {
            let (cited, numbered) = citations(line);
            if numbered {
                failures.push(format!(
                    "{}:{}: cites a section by number; link its heading instead (docs/protocol.md#errors)",
                    rel(file),
                    n + 1
                ));
            }
            for target in cited {
                count += 1;
                // Cited from the repository root, as a reader of the code follows it.
                if let Some(why) = broken(&readme, &target, &mut cache) {
                    failures.push(format!("{}:{}: {target}: {why}", rel(file), n + 1));
                }
            }
        }
    }
    assert!(failures.is_empty(), "doc citations that do not resolve:\n{}", failures.join("\n"));
    assert!(count >= 20, "found only {count} doc citations in the code");
}

#[test]
fn github_anchors_are_computed_as_github_does() {
    let text = "# A `[server]` table\n## Walkthrough: who, and `deny`\n```\n# not a heading\n```\n\
                ## Same\n## Same\n### The request's host\n## [Linked](x.md) text\n";
    let got: Vec<_> = anchors(text).into_iter().collect();
    assert_eq!(
        got,
        ["a-server-table", "linked-text", "same", "same-1", "the-requests-host", "walkthrough-who-and-deny"]
    );
    // Spelled in pieces, so the scan of the code for citations does not take them for some.
    let links =
        link_targets(concat!("[a](b.md", "#c) `[not](x)` and [d](#e)\n```\n[no](y)\n```\n[ref]: z.md\n"));
    let targets: Vec<_> = links.into_iter().map(|(_, t)| t).collect();
    assert_eq!(targets, [concat!("b.md", "#c"), "#e", "z.md"]);
    let (cited, numbered) =
        citations(concat!("see (docs/protocol.md#the-v2-request) and `docs/x.md`", " §3"));
    assert_eq!((cited, numbered), (vec!["docs/protocol.md#the-v2-request".to_owned()], true));
}

/// A config with every optional part filled in, one `[[providers]]` and one `[[clients]]`, so
/// every table appears when it is serialized.
fn populated() -> Config {
    let lookup = || LegacyFieldsConfig {
        url: "https://api.example.com/me".into(),
        organizer_key: Some("/key".into()),
        account_key: Some("/accountKey".into()),
        account_type: Some("/type".into()),
        first_name: Some("/firstName".into()),
        last_name: Some("/lastName".into()),
        email: Some("/email".into()),
        ..LegacyFieldsConfig::default()
    };
    let mut config = Config::default();
    config.admin.token_env = Some("ADMIN_TOKEN".into());
    config.admin.token_file = Some("/run/admin-token".into());
    config.admin.allowed_hosts = vec!["admin.example.com".into()];
    config.upstream.ca_file = Some("/etc/ca.pem".into());
    let tls = oauth_shim::config::TlsConfig {
        cert_file: "/etc/tls/tls.crt".into(),
        key_file: "/etc/tls/tls.key".into(),
        client_ca_file: Some("/etc/tls/clients.pem".into()),
        ..Default::default()
    };
    config.server.tls = Some(tls.clone());
    config.admin.tls = Some(tls);
    config.provider.legacy_fields = Some(lookup());
    let s = &mut config.state;
    s.url = Some("redis://127.0.0.1:6379".into());
    s.password_env = Some("REDIS_PASSWORD".into());
    s.password_file = Some("/run/redis-password".into());
    s.ca_file = Some("/etc/redis-ca.pem".into());
    s.encryption_key_env = Some("STATE_KEYS".into());
    s.encryption_key_file = Some("/run/state-keys".into());
    config.providers = vec![ProviderConfig {
        name: "identity".into(),
        preset: Some(Preset::GotoIdentity),
        hosts: vec!["identity.example.com".into()],
        token_url: Some("https://id.example.com/oauth/token".into()),
        authorize_url: Some("https://id.example.com/oauth/authorize".into()),
        api_base: Some("https://api.example.com".into()),
        legacy_fields: Some(lookup()),
        ..ProviderConfig::default()
    }];
    config.clients = vec![ClientConfig {
        id: "client".into(),
        provider: Some("identity".into()),
        secret: Some(Secret::new("secret")),
        secret_env: Some("CLIENT_SECRET".into()),
        secret_file: Some("/run/client-secret".into()),
        redirect_uri: Some("https://app.example.com/cb".into()),
        redirect_uri_allow: vec!["https://app.example.com/cb".into()],
        ..ClientConfig::default()
    }];
    config
}

/// A table of the config: its dotted path, and for each part whether it is an array of tables.
type Table = Vec<(String, bool)>;

fn dotted(table: &Table) -> String {
    table.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(".")
}

/// The tables of a serialized config, and the keys each holds there.
fn serialized_tables(value: &serde_json::Value, at: Table, out: &mut BTreeMap<Table, BTreeSet<String>>) {
    let serde_json::Value::Object(map) = value else { return };
    let keys = out.entry(at.clone()).or_default();
    keys.extend(map.keys().cloned());
    for (key, value) in map {
        let (inner, array) = match value {
            serde_json::Value::Array(items) if items.iter().all(|i| i.is_object()) && !items.is_empty() => {
                (&items[0], true)
            }
            v @ serde_json::Value::Object(_) => (v, false),
            _ => continue,
        };
        let mut path = at.clone();
        path.push((key.clone(), array));
        serialized_tables(inner, path, out);
    }
}

/// The TOML text that puts `key = value` inside `table` (in the first element of its arrays).
fn toml_at(table: &Table, key: &str, value: &str) -> String {
    let mut text = String::new();
    for i in 0..table.len() {
        let name = dotted(&table[..=i].to_vec());
        text.push_str(&if table[i].1 { format!("[[{name}]]\n") } else { format!("[{name}]\n") });
    }
    text.push_str(&format!("{key} = {value}\n"));
    text
}

/// Sub-tables still accepted under an old name and moved at load (documented there in one row),
/// which a config built in code cannot hold.
const DEPRECATED_TABLES: [(&str, &str); 1] = [("upstream", "legacy_fields")];

const PROBE: &str = "oauth_shim_docs_probe";

/// Every key deserialization accepts in `table`: what serde's unknown-field error lists when
/// a probe key is put there.
fn accepted_keys(table: &Table) -> Vec<&'static str> {
    let figment = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(&toml_at(table, PROBE, "1")));
    let err = figment.extract::<Config>().expect_err("a probe key is refused");
    err.into_iter()
        .find_map(|e| match e.kind {
            figment::error::Kind::UnknownField(field, expected) if field == PROBE => Some(expected.to_vec()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no unknown-field error for a probe in [{}]", dotted(table)))
}

/// Whether `key` of `table` is itself a table (a probe inside it is refused as unknown).
fn is_table(table: &Table, key: &str) -> bool {
    let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&toml_at(
        table,
        key,
        &format!("{{ {PROBE} = 1 }}"),
    )));
    figment.extract::<Config>().err().is_some_and(|err| {
        err.into_iter().any(|e| matches!(e.kind, figment::error::Kind::UnknownField(ref f, _) if f == PROBE))
    })
}

/// Each section of a markdown text: its heading, and its text up to the next heading of the
/// same or a higher level.
fn sections(text: &str) -> Vec<(String, String)> {
    let lines = prose(text);
    let mut out = Vec::new();
    for (i, (_, line)) in lines.iter().enumerate() {
        let Some((level, title)) = heading(line) else { continue };
        let body: Vec<&str> = lines[i + 1..]
            .iter()
            .map(|(_, l)| *l)
            .take_while(|l| heading(l).is_none_or(|(lv, _)| lv > level))
            .collect();
        out.push((title.to_owned(), body.join("\n")));
    }
    out
}

#[test]
fn every_config_key_the_code_accepts_is_documented() {
    let path = root().join("docs/configuration.md");
    let doc = read(&path);
    let sections = sections(&doc);
    let value = serde_json::to_value(populated()).unwrap();
    let mut tables = BTreeMap::new();
    serialized_tables(&value, Vec::new(), &mut tables);
    assert!(tables.len() >= 14, "the populated config shows only these tables: {:?}", tables.keys());

    let mut missing = Vec::new();
    let mut checked = 0;
    for (table, serialized) in &tables {
        let accepted = accepted_keys(table);
        for key in serialized {
            assert!(
                accepted.contains(&key.as_str()),
                "[{}] serializes `{key}` but does not accept it",
                dotted(table)
            );
        }
        if table.is_empty() {
            // The top-level keys are the tables: each needs a section of its own.
            for key in &accepted {
                let names = [format!("`[{key}]`"), format!("`[[{key}]]`")];
                if !sections.iter().any(|(title, _)| names.iter().any(|n| title.contains(n))) {
                    missing.push(format!("`{key}`: no section headed `[{key}]` or `[[{key}]]`"));
                }
            }
            continue;
        }
        let name = dotted(table);
        for key in &accepted {
            assert!(
                serialized.contains(*key)
                    || !is_table(table, key)
                    || DEPRECATED_TABLES.contains(&(name.as_str(), *key)),
                "[{name}] {key} is a table the populated config leaves out: fill it in `populated()` so its keys are checked"
            );
        }
        let heads = [format!("`[{name}]`"), format!("`[[{name}]]`")];
        let Some((title, body)) = sections.iter().find(|(title, _)| heads.iter().any(|h| title.contains(h)))
        else {
            missing.push(format!("`{name}`: no section headed `[{name}]` or `[[{name}]]`"));
            continue;
        };
        // A key is documented by a row of the section's table whose first cell names it (the
        // other cells hold its default and meaning); a mention in passing does not count.
        let named: Vec<&str> =
            body.lines().filter_map(|l| l.trim_start().strip_prefix('|')?.split('|').next()).collect();
        for key in accepted {
            checked += 1;
            if !named.iter().any(|cell| cell.contains(&format!("`{key}`"))) {
                missing.push(format!("`{name}.{key}`: no table row for `{key}` in the section \"{title}\""));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document these config keys (give each its default and meaning):\n{}",
        missing.join("\n")
    );
    assert!(checked >= 80, "only {checked} keys checked");
}
