//! Tracing setup: human-readable lines by default, JSON lines with `[log] format = "json"`;
//! `[log] level`, overridden by `RUST_LOG`. Either way, characters that would make a terminal or
//! a log viewer misrender a line (C1 controls, bidirectional overrides) are escaped.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber, writing to stdout. Safe to call more than once (later calls
/// do nothing).
pub(crate) fn init(cfg: &LogConfig) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = subscriber(cfg, std::io::stdout, ansi).try_init();
}

/// The subscriber [`init`] installs, writing to `writer` (tests capture with it).
pub fn subscriber<W>(cfg: &LogConfig, writer: W, ansi: bool) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    match cfg.format {
        LogFormat::Text => Box::new(builder.with_writer(Escaping { inner: writer, json: false }).finish()),
        LogFormat::Json => Box::new(
            builder.with_writer(Escaping { inner: writer, json: true }).json().flatten_event(true).finish(),
        ),
    }
}

/// A writer that escapes, in each formatted line, the characters a terminal or a log viewer
/// would act on rather than show: DEL, the C1 controls (U+0080 to U+009F: U+009B is a one-byte
/// CSI), the bidirectional marks, embeddings, overrides and isolates (U+061C, U+200E, U+200F,
/// U+202A to U+202E, U+2066 to U+2069), and the line and paragraph separators (U+2028,
/// U+2029). JSON lines get `\u009b`, which a JSON reader decodes back to the same value (such
/// a character can only stand inside a JSON string); text lines get `\u{9b}`, as
/// tracing-subscriber writes the C0 controls it escapes. Logged values are caller input (paths,
/// client ids, user agents) and are escaped wherever they appear. A line with none of them
/// (nearly every line) is written through untouched; the formatter writes each line with one
/// call, so no character is split across calls.
struct Escaping<M> {
    inner: M,
    json: bool,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter { inner: self.inner.make_writer(), json: self.json }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        EscapingWriter { inner: self.inner.make_writer_for(meta), json: self.json }
    }
}

struct EscapingWriter<W> {
    inner: W,
    json: bool,
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(first) = (0..buf.len()).find(|&i| misrendered(&buf[i..]).is_some()) else {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        };
        // One write of the whole escaped line, so lines of concurrent events do not interleave.
        let mut out = Vec::with_capacity(buf.len() + 16);
        out.extend_from_slice(&buf[..first]);
        let mut i = first;
        while i < buf.len() {
            match misrendered(&buf[i..]) {
                Some((c, len)) => {
                    let _ = if self.json { write!(out, "\\u{c:04x}") } else { write!(out, "\\u{{{c:x}}}") };
                    i += len;
                }
                None => {
                    out.push(buf[i]);
                    i += 1;
                }
            }
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The character at the start of `b` and its length in bytes, when it is one to escape.
fn misrendered(b: &[u8]) -> Option<(u32, usize)> {
    match *b {
        [0x7f, ..] => Some((0x7f, 1)),
        [0xc2, c @ 0x80..=0x9f, ..] => Some((u32::from(c), 2)),
        [0xd8, 0x9c, ..] => Some((0x061c, 2)),
        [0xe2, 0x80, c @ (0x8e | 0x8f | 0xa8..=0xae), ..] => Some((0x2000 + u32::from(c - 0x80), 3)),
        [0xe2, 0x81, c @ 0xa6..=0xa9, ..] => Some((0x2040 + u32::from(c - 0x80), 3)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(line: &str, json: bool) -> String {
        let mut w = EscapingWriter { inner: Vec::new(), json };
        w.write_all(line.as_bytes()).unwrap();
        String::from_utf8(w.inner).unwrap()
    }

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        let line = "{\"path\":\"/a\u{9b}31mb\u{202e}c\u{7f}\u{2066}\u{2028}\u{61c}\u{200f}\u{85}\"}";
        let json = escaped(line, true);
        assert_eq!(json, r#"{"path":"/a\u009b31mb\u202ec\u007f\u2066\u2028\u061c\u200f\u0085"}"#);
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["path"], "/a\u{9b}31mb\u{202e}c\u{7f}\u{2066}\u{2028}\u{61c}\u{200f}\u{85}");
        assert_eq!(escaped("path=/a\u{202e}b", false), "path=/a\\u{202e}b");
        // Everything else passes untouched, other non-ASCII text included.
        for plain in
            ["{\"path\":\"/caf\u{e9}/\u{2019}\u{20ac}\u{2029}x\"}", "plain ascii\n", "\u{a0}\u{200d}"]
        {
            let want =
                if plain.contains('\u{2029}') { plain.replace('\u{2029}', "\\u2029") } else { plain.into() };
            assert_eq!(escaped(plain, true), want);
        }
    }
}
