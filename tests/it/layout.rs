//! The code layout holds: no import circles among `src/` files or folders, every import points
//! down the layers `src/lib.rs` lists, errors become responses only in the app's rescue (no other
//! module renders a `ShimError` or writes an `"error"` JSON body by hand), and no source file is
//! over the size a reader can hold in mind. Run alone with
//! `cargo test --test it layout -- --nocapture`; on failure it prints each circle with its links.
//! `LAYOUT_EDGES=1` prints every edge.
//!
//! It reads the source text, not rustc's resolution: every `crate::…`, `super::…` and `self::…`
//! path, and every path through one of the file's own child modules (`child::Item`), outside
//! comments, strings and the file's `#[cfg(test)]` module, is an edge from the file it is in to
//! the deepest module that path names. `mod x;` declarations are not edges; `pub use`
//! re-exports are. A folder's `mod.rs` is a module like any other, so a `mod.rs` that
//! re-exports a child which in turn reaches back into the `mod.rs` is a circle. Paths a macro
//! builds are not seen (none of this crate's macros name another module).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files longer than this (lines, tests included) are split.
const MAX_LINES: usize = 520;

type Module = Vec<String>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file under `src/` with its module path (`main.rs` is the binary).
fn modules() -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, prefix: &Module, out: &mut BTreeMap<Module, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            if path.is_dir() {
                let mut p = prefix.clone();
                p.push(name);
                walk(&path, &p, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match name.as_str() {
                    "lib" if prefix.is_empty() => prefix.clone(),
                    "main" if prefix.is_empty() => continue,
                    "mod" => prefix.clone(),
                    _ => {
                        let mut p = prefix.clone();
                        p.push(name);
                        p
                    }
                };
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src_dir(), &Vec::new(), &mut out);
    out
}

/// The source without comments, string literals and the trailing test module.
fn code_of(text: &str) -> String {
    scrub(text, false)
}

/// The source without comments and the trailing test module, string literals kept.
fn code_with_strings(text: &str) -> String {
    scrub(text, true)
}

fn scrub(text: &str, keep_strings: bool) -> String {
    // The first `#[cfg(test)]` attribute on an inline module (`mod tests {`, of any visibility).
    let test_module = text.match_indices("#[cfg(test)]\n").map(|(at, _)| at).find(|&at| {
        let next = text[at..].lines().nth(1).unwrap_or_default();
        let item = next.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
        item.starts_with("mod ") && next.ends_with('{')
    });
    let text = match test_module {
        Some(at) => &text[..at],
        None => text,
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            i += 2;
            while i < bytes.len() && !bytes[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if bytes[i] == b'"' {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            if keep_strings {
                out.push_str(&text[start..i.min(text.len())]);
            } else {
                out.push_str("\"\"");
            }
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses a path (or use tree) starting at `at`, pushing every full path it names.
fn paths_at(code: &[u8], mut at: usize, prefix: Module, out: &mut Vec<Module>) {
    let mut path = prefix;
    loop {
        while at < code.len() && code[at].is_ascii_whitespace() {
            at += 1;
        }
        if at < code.len() && code[at] == b'{' {
            // A use group: each comma-separated tree at depth one.
            at += 1;
            loop {
                while at < code.len() && (code[at].is_ascii_whitespace() || code[at] == b',') {
                    at += 1;
                }
                if at >= code.len() || code[at] == b'}' {
                    return;
                }
                let start = at;
                paths_at(code, start, path.clone(), out);
                // Skip this tree: to the next comma or closing brace at this depth.
                let mut depth = 0;
                while at < code.len() {
                    match code[at] {
                        b'{' => depth += 1,
                        b'}' if depth == 0 => break,
                        b'}' => depth -= 1,
                        b',' if depth == 0 => break,
                        _ => {}
                    }
                    at += 1;
                }
            }
        }
        let start = at;
        while at < code.len() && is_ident(code[at]) {
            at += 1;
        }
        if start == at {
            break;
        }
        path.push(String::from_utf8_lossy(&code[start..at]).into_owned());
        if code[at..].starts_with(b"::") {
            at += 2;
        } else {
            break;
        }
    }
    out.push(path);
}

/// The module paths a file's code names through `crate::`, `super::`, `self::`, or the name of
/// one of its own child modules (`child::Item`, as a folder's `mod.rs` re-exports).
fn references(module: &Module, is_mod_rs: bool, code: &str, known: &BTreeSet<Module>) -> Vec<Module> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let preceded = i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':');
        let child = (!preceded && is_ident(bytes[i]))
            .then(|| {
                let end = i + bytes[i..].iter().take_while(|b| is_ident(**b)).count();
                let mut path = module.clone();
                path.push(String::from_utf8_lossy(&bytes[i..end]).into_owned());
                (bytes[end..].starts_with(b"::") && known.contains(&path)).then_some(end)
            })
            .flatten();
        if let Some(end) = child {
            paths_at(bytes, i, module.clone(), &mut out);
            i = end;
        } else if !preceded && bytes[i..].starts_with(b"self::") {
            paths_at(bytes, i + 6, module.clone(), &mut out);
            i += 6;
        } else if !preceded && bytes[i..].starts_with(b"crate::") {
            paths_at(bytes, i + 7, Vec::new(), &mut out);
            i += 7;
        } else if !preceded && bytes[i..].starts_with(b"super::") {
            // `super` of a file module is its folder's module; of a mod.rs, the folder's parent.
            let mut base = module.clone();
            if !is_mod_rs || !base.is_empty() {
                base.pop();
            }
            let mut at = i + 7;
            while bytes[at..].starts_with(b"super::") {
                base.pop();
                at += 7;
            }
            // `super::m` written inside an inline `mod x { … }` of this file, naming its sibling
            // inline module `m`, stays in the file.
            let next = bytes[at..].iter().take_while(|b| is_ident(**b)).count();
            let inline = format!("mod {} {{", String::from_utf8_lossy(&bytes[at..at + next]));
            if next == 0 || !code.contains(&inline) {
                paths_at(bytes, at, base, &mut out);
            }
            i = at;
        } else {
            i += 1;
        }
    }
    out
}

/// The deepest known module a path names.
fn resolve(path: &Module, known: &BTreeSet<Module>) -> Module {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| known.contains(p)).unwrap_or_default()
}

fn name(m: &Module) -> String {
    if m.is_empty() { "crate".to_owned() } else { m.join("::") }
}

/// Edges between distinct modules, from the source text.
fn edges() -> BTreeSet<(Module, Module)> {
    let modules = modules();
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    let mut edges = BTreeSet::new();
    for (module, path) in &modules {
        let text = std::fs::read_to_string(path).unwrap();
        let is_mod_rs = path.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        for reference in references(module, is_mod_rs, &code_of(&text), &known) {
            let target = resolve(&reference, &known);
            if &target != module && !target.is_empty() {
                edges.insert((module.clone(), target));
            }
        }
    }
    edges
}

/// The strongly connected components with more than one node (Tarjan).
fn circles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let mut nodes: BTreeSet<&String> = BTreeSet::new();
    let mut next: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (a, b) in edges {
        nodes.insert(a);
        nodes.insert(b);
        next.entry(a).or_default().push(b);
    }
    struct State<'a> {
        index: BTreeMap<&'a String, usize>,
        low: BTreeMap<&'a String, usize>,
        stack: Vec<&'a String>,
        on_stack: BTreeSet<&'a String>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(v: &'a String, next: &BTreeMap<&'a String, Vec<&'a String>>, s: &mut State<'a>) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in next.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, next, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !state.index.contains_key(v) {
            visit(v, &next, &mut state);
        }
    }
    state.out
}

#[test]
fn no_import_circles_among_files_or_folders() {
    let edges = edges();
    if std::env::var_os("LAYOUT_EDGES").is_some() {
        for (a, b) in &edges {
            println!("{} -> {}", name(a), name(b));
        }
    }
    assert!(edges.len() > 50, "the edge scan found too little: {edges:?}");
    let depth = edges.iter().map(|(a, b)| a.len().max(b.len())).max().unwrap();
    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    // Depth `depth` is the file graph; each shallower depth folds files into their folders.
    for level in (1..=depth).rev() {
        let folded: BTreeSet<(String, String)> = edges
            .iter()
            .map(|(a, b)| (name(&a[..a.len().min(level)].to_vec()), name(&b[..b.len().min(level)].to_vec())))
            .filter(|(a, b)| a != b)
            .collect();
        for circle in circles(&folded) {
            if !seen.insert(circle.clone()) {
                continue;
            }
            let links: Vec<String> = folded
                .iter()
                .filter(|(a, b)| circle.contains(a) && circle.contains(b))
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect();
            failures.push(format!("depth {level}: {}\n    {}", circle.join(", "), links.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "import circles:\n{}", failures.join("\n"));
}

/// The top-level modules from the top of the stack down (the order `src/lib.rs` documents): a
/// module may import only modules on lower lines. `fuzzing` (the fuzz targets' entry points)
/// sits outside the stack and may import anything.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["devtools"],
    &["boot"],
    &["server"],
    &["admin"],
    &["app"],
    &["routes"],
    &["app_state"],
    &["continuity"],
    &["snapshot"],
    &["provider"],
    &["tls"],
    &["lookup"],
    &["ops"],
    &["refresh"],
    &["redis"],
    &["legacy"],
    &["config"],
    &["oauth"],
    &["upstream"],
    &["error"],
    &["body", "crypto", "json", "request_id"],
];

#[test]
fn dependencies_point_down_the_layers() {
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut wrong = BTreeSet::new();
    for (a, b) in edges() {
        let (a, b) = (a[0].as_str(), b[0].as_str());
        if a == b || a == "fuzzing" {
            continue;
        }
        match (layer(a), layer(b)) {
            (Some(la), Some(lb)) if la < lb => {}
            (None, _) | (_, None) => {
                wrong.insert(format!("{a} -> {b}: add the module to LAYERS (and to the map in src/lib.rs)"));
            }
            _ => {
                wrong.insert(format!("{a} -> {b}: {a} is not above {b}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn no_source_file_is_too_long() {
    let long: Vec<String> = modules()
        .values()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

/// Whether code builds an error answer: `ShimError::into_response`, or a JSON body with an
/// `"error"` member written by hand (the shape every error answer has), whatever the status.
fn builds_an_error_answer(code: &str) -> bool {
    const HAND_WRITTEN: [&str; 4] =
        [r#"json!({ "error""#, r#"json!({"error""#, r#""{\"error\""#, r#"{"error":"#];
    code.contains(".into_response()") || HAND_WRITTEN.iter().any(|p| code.contains(p))
}

/// Where an error answer may be built besides the rescue: `error.rs` defines the one rendering
/// the rescue uses, the stand-in (`devtools/`) answers as the v2 upstream, not as oauth-shim,
/// and the admin guard's refusals (`{"error": why}`, before any admin route runs) are the admin
/// listener's own contract.
const MAY_BUILD_ERROR_ANSWERS: &[&str] = &["app/rescue.rs", "error.rs", "devtools/", "admin/guard.rs"];

#[test]
fn errors_become_responses_only_in_the_rescue() {
    let builders: Vec<String> = modules()
        .values()
        .map(|path| path.strip_prefix(src_dir()).unwrap().display().to_string())
        .filter(|path| !MAY_BUILD_ERROR_ANSWERS.iter().any(|allowed| path.starts_with(allowed)))
        .filter(|path| {
            let text = std::fs::read_to_string(src_dir().join(path)).unwrap();
            builds_an_error_answer(&code_with_strings(&text))
        })
        .collect();
    assert!(
        builders.is_empty(),
        "errors become answers only in the app's rescue (app::rescue): {builders:?}"
    );
}

#[test]
fn the_error_answer_scan_sees_each_way_of_building_one() {
    for code in [
        "fn f(e: ShimError) -> Response<Body> { e.into_response() }",
        r#"let error = |status, msg: &str| super::routes::json(status, &serde_json::json!({ "error": msg }));"#,
        r#"json(StatusCode::CONFLICT, &serde_json::json!({"error": "nothing to reload"}))"#,
        r##"full(r#"{"error":"server_error"}"#)"##,
        r#"full("{\"error\":\"server_error\"}")"#,
    ] {
        assert!(builds_an_error_answer(&code_with_strings(code)), "{code}");
    }
    for code in [
        "// e.into_response()",
        r#"tracing::warn!(error = %e, "failed");"#,
        "#[cfg(test)]\nmod tests {\n fn t() { e.into_response(); }\n}\n",
    ] {
        assert!(!builds_an_error_answer(&code_with_strings(code)), "{code}");
    }
}

#[test]
fn the_scan_sees_grouped_and_relative_paths() {
    let code = code_of(
        "use crate::{a::{b, c::D}, e};\n// crate::commented\nfn f() { super::g::h(); let s = \"crate::quoted\"; }\npub use z::W;\nfn g() { self::z::V; w::z::U; }\n",
    );
    let known: BTreeSet<Module> = [vec!["x".into(), "y".into(), "z".into()]].into();
    let found = references(&vec!["x".into(), "y".into()], false, &code, &known);
    let found: BTreeSet<String> = found.iter().map(name).collect();
    let want: BTreeSet<String> =
        ["a::b", "a::c::D", "e", "x::g::h", "x::y::z::W", "x::y::z::V"].map(String::from).into();
    assert_eq!(found, want);
}
