//! A small JSON writer, so token answers are rendered without an intermediate `Value` tree. It
//! writes exactly what `serde_json` writes for the same values.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// `,"name":` for a name that needs no escaping (the names this module writes itself).
pub(crate) fn key(out: &mut Vec<u8>, name: &'static str) {
    debug_assert!(!needs_escape(name));
    out.reserve(name.len() + 4);
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `,"name":` for any name.
pub(crate) fn name(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    write_str(out, name);
    out.push(b':');
}

/// Whether `serde_json` escapes anything in `s`. Checks every byte without stopping early,
/// which the compiler turns into a few wide compares for typical lengths.
fn needs_escape(s: &str) -> bool {
    s.bytes().fold(false, |any, b| any | (b < 0x20) | (b == b'"') | (b == b'\\'))
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Most strings need no escaping; copy those without going through serde_json's writer.
    if !needs_escape(s) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(out, s);
    }
}

/// Decimal digits of `n`, without `core::fmt` (also used for the upstream client's
/// `Content-Length`).
pub(crate) fn write_u64(out: &mut impl bytes::BufMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Deserializes any JSON value by writing it to the buffer, as `serde_json` would write the
/// `Value` it deserializes to, without building one for scalars.
pub(crate) struct Render<'a>(pub &'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Render<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Render<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        let _ = serde_json::to_writer(self.0, &Value::from(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        write_u64(self.0, v);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // `Value::from(f64)` is `null` for non-finite numbers.
        let _ = serde_json::to_writer(self.0, &Value::from(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_str(self.0, v);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    // Arrays and objects are rare here: build the `Value` (an object's repeated keys keep
    // their first place and last value) and write that.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let v: Value = serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        let _ = serde_json::to_writer(self.0, &v);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let v: Value = serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        let _ = serde_json::to_writer(self.0, &v);
        Ok(())
    }
}

/// As [`Render`], for a value where `null` means absent: true if a value was written.
pub(crate) struct RenderOption<'a>(pub &'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for RenderOption<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for RenderOption<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        Render(self.0).deserialize(d).map(|()| true)
    }
}
