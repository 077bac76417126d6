//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the function its
//! fuzz target calls, on stable, as part of `cargo test --all-features` (the test needs the
//! `fuzzing` feature): what the fuzzers found stays fixed.

use std::path::Path;

use oauth_shim::fuzzing;

/// A fuzz target's entry function.
type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 5] = [
    ("answer_head", fuzzing::answer_head),
    ("chunked_body", fuzzing::chunked_body),
    ("legacy_params", fuzzing::legacy_params),
    ("token_answer", fuzzing::token_answer),
    ("h1_vs_hyper", fuzzing::h1_vs_hyper),
];

#[test]
fn every_fuzz_corpus_file_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, run) in TARGETS {
        let mut files: Vec<_> = std::fs::read_dir(root.join(target))
            .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
        for file in files {
            let data = match std::fs::read(&file) {
                Ok(data) => data,
                // A fuzzer running in the same tree replaces corpus files as it shrinks them.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", file.display()),
            };
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                panic!("{target}: {} fails", file.display());
            }
        }
    }
}

#[test]
fn the_differential_agrees_on_well_formed_answers() {
    // A few answers both clients must read identically, so the check itself is seen to work.
    for (raw, body, reuse) in [
        (&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"[..], &b"hello"[..], true),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"hello",
            true,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\nto the close", b"to the close", false),
        // Framed two ways: decoded as chunked by both, and neither connection trusted again.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"hello",
            false,
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", b"", true),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", false),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", false),
    ] {
        for step in [1, 3, raw.len()] {
            let ours = fuzzing::h1_answer(raw, false, step).unwrap();
            let theirs = fuzzing::hyper_answer(raw, false, step).unwrap();
            assert_eq!((&ours.body[..], ours.reuse), (body, reuse), "{}", String::from_utf8_lossy(raw));
            assert_eq!(
                (&theirs.body[..], theirs.reuse),
                (body, reuse),
                "hyper: {}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut input = vec![0u8];
        input.extend_from_slice(raw);
        fuzzing::h1_vs_hyper(&input);
    }
}
