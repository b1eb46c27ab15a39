//! Reading fields straight out of raw BSON: the hot path never builds a
//! `Document` tree or goes through serde.
//!
//! A source string that is not valid UTF-8 is kept as [`Value::BadText`]
//! and written with U+FFFD in place of its bad bytes (spec: exports.md,
//! text cells): it never blanks its cell, never ends the reading of the
//! rest of the document, and never lets a fallback field stand in for it.

use std::borrow::Cow;

use mongodb::bson::raw::RawElement;
use mongodb::bson::spec::ElementType;
use mongodb::bson::{RawBsonRef, RawDocument};

use crate::store::iso;

/// A field's value as read from a source document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Bson(RawBsonRef<'a>),
    /// A string whose bytes are not valid UTF-8 (the bytes, without the
    /// terminating NUL).
    BadText(&'a [u8]),
}

/// The value of one element; `None` only for an element that cannot be
/// read at all (malformed BSON).
fn value_of<'a>(doc: &'a RawDocument, el: &RawElement<'a>) -> Option<Value<'a>> {
    match el.value() {
        Ok(v) => Some(Value::Bson(v)),
        Err(_) if el.element_type() == ElementType::String => {
            let bytes = string_bytes(doc, el)?;
            // Which export: the worker's span; which field: the key. Never
            // the value.
            tracing::warn!(
                field = el.key(),
                "a source string is not valid UTF-8: written with U+FFFD for its bad bytes"
            );
            Some(Value::BadText(bytes))
        }
        Err(_) => None,
    }
}

/// The bytes of a string element. The element's key is a slice of the
/// document's bytes; the string (a little-endian i32 length, the bytes, a
/// NUL) follows the key's NUL.
fn string_bytes<'a>(doc: &'a RawDocument, el: &RawElement<'a>) -> Option<&'a [u8]> {
    let bytes = doc.as_bytes();
    let key = el.key();
    let key_at = (key.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
    let start = key_at + key.len() + 1;
    let len = i32::from_le_bytes(bytes.get(start..start + 4)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?.checked_sub(1)?;
    bytes.get(start + 4..start + 4 + len)
}

/// The value of `key` in `doc` (the first occurrence), reading past values
/// that are not valid UTF-8.
fn field<'a>(doc: &'a RawDocument, key: &str) -> Option<Value<'a>> {
    for el in doc.iter_elements() {
        // A malformed element ends what can be read of the document.
        let Ok(el) = el else { return None };
        if el.key() == key {
            return value_of(doc, &el);
        }
    }
    None
}

/// The value at a dotted path (`["fields", "email"]`), if present.
pub fn get<'a>(doc: &'a RawDocument, path: &[&str]) -> Option<Value<'a>> {
    let (last, parents) = path.split_last()?;
    let mut cur = doc;
    for p in parents {
        cur = doc_of(field(cur, p))?;
    }
    field(cur, last)
}

/// The value as text: strings borrowed, numbers/ids/dates formatted, null
/// and missing empty, bad UTF-8 with U+FFFD.
pub fn text<'a>(v: Option<Value<'a>>) -> Cow<'a, str> {
    match v {
        None => Cow::Borrowed(""),
        Some(Value::BadText(b)) => String::from_utf8_lossy(b),
        Some(Value::Bson(b)) => bson_text(b),
    }
}

fn bson_text(v: RawBsonRef<'_>) -> Cow<'_, str> {
    match v {
        RawBsonRef::Null | RawBsonRef::Undefined => Cow::Borrowed(""),
        RawBsonRef::String(s) => Cow::Borrowed(s),
        RawBsonRef::Boolean(b) => Cow::Borrowed(if b { "true" } else { "false" }),
        RawBsonRef::Int32(i) => Cow::Owned(i.to_string()),
        RawBsonRef::Int64(i) => Cow::Owned(i.to_string()),
        RawBsonRef::Double(d) => Cow::Owned(fmt_double(d)),
        RawBsonRef::ObjectId(o) => Cow::Owned(o.to_hex()),
        RawBsonRef::DateTime(d) => Cow::Owned(iso(d)),
        RawBsonRef::Array(a) => {
            let Ok(doc) = RawDocument::from_bytes(a.as_bytes()) else {
                return Cow::Borrowed("");
            };
            let parts: Vec<Cow<'_, str>> = doc
                .iter_elements()
                .map_while(Result::ok)
                .map(|el| text(value_of(doc, &el)))
                .collect();
            Cow::Owned(parts.join(","))
        }
        other => match other.to_raw_bson().try_into() {
            Ok(b) => Cow::Owned(mongodb::bson::Bson::to_string(&b)),
            Err(_) => Cow::Borrowed(""),
        },
    }
}

/// The values of several keys of one document, found in one pass over it.
/// A [`get`] per key scans from the start every time; a row's ~15 lookups
/// that way were half an export's CPU (callgrind, docs/performance.md).
/// `None` for a missing key or a missing document.
pub fn pick<'a, const N: usize>(
    doc: Option<&'a RawDocument>,
    keys: [&str; N],
) -> [Option<Value<'a>>; N] {
    let mut out = [None; N];
    if let Some(doc) = doc {
        pick_into(doc, &keys, &mut out);
    }
    out
}

/// [`pick`] for keys known only at run time (a campaign's preferences):
/// `out[i]` gets the value of `keys[i]`; `out` is not cleared first.
pub fn pick_into<'a>(doc: &'a RawDocument, keys: &[&str], out: &mut [Option<Value<'a>>]) {
    let mut left = keys.len();
    for el in doc.iter_elements() {
        // A malformed element ends what can be read of the document.
        let Ok(el) = el else { break };
        let key = el.key();
        let Some(i) = keys.iter().position(|k| *k == key) else {
            continue;
        };
        // The first occurrence wins, as with `get`.
        if out[i].is_none() {
            out[i] = value_of(doc, &el);
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
}

/// A value as a sub-document, if it is one.
pub fn doc_of(v: Option<Value<'_>>) -> Option<&RawDocument> {
    match v {
        Some(Value::Bson(RawBsonRef::Document(d))) => Some(d),
        _ => None,
    }
}

/// A value as an array's elements, if it is one (unreadable ones left out).
pub fn array_of<'a>(v: Option<Value<'a>>) -> Vec<Value<'a>> {
    match v {
        Some(Value::Bson(RawBsonRef::Array(a))) => {
            // An array is a document keyed "0", "1", ….
            let Ok(doc) = RawDocument::from_bytes(a.as_bytes()) else {
                return Vec::new();
            };
            doc.iter_elements()
                .map_while(Result::ok)
                .filter_map(|el| value_of(doc, &el))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Present and not null.
pub fn set(v: Option<Value<'_>>) -> bool {
    !matches!(
        v,
        None | Some(Value::Bson(RawBsonRef::Null | RawBsonRef::Undefined))
    )
}

/// Text at a path.
pub fn text_at<'a>(doc: &'a RawDocument, path: &[&str]) -> Cow<'a, str> {
    text(get(doc, path))
}

/// The first non-empty of two candidates.
pub fn or_else<'a>(a: Cow<'a, str>, b: impl FnOnce() -> Cow<'a, str>) -> Cow<'a, str> {
    if a.is_empty() {
        b()
    } else {
        a
    }
}

/// A JavaScript-style number: integers without a fraction.
fn fmt_double(d: f64) -> String {
    if d.fract() == 0.0 && d.abs() < 1e15 {
        format!("{}", d as i64)
    } else {
        d.to_string()
    }
}

/// Present and not null.
pub fn is_set(doc: &RawDocument, path: &[&str]) -> bool {
    set(get(doc, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, DateTime, RawDocumentBuf};

    /// A document `{a: "ok", bad: <"x\xffy", not UTF-8>, email: "e@x", n: 7}`
    /// built byte by byte (no BSON library writes invalid UTF-8).
    fn doc_with_bad_string() -> RawDocumentBuf {
        let mut body = Vec::new();
        let mut string = |key: &str, val: &[u8]| {
            body.push(0x02);
            body.extend_from_slice(key.as_bytes());
            body.push(0);
            body.extend_from_slice(&((val.len() + 1) as i32).to_le_bytes());
            body.extend_from_slice(val);
            body.push(0);
        };
        string("a", b"ok");
        string("bad", b"x\xffy");
        string("email", b"e@x");
        body.push(0x10);
        body.extend_from_slice(b"n\0");
        body.extend_from_slice(&7i32.to_le_bytes());
        let mut bytes = ((body.len() + 5) as i32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        bytes.push(0);
        RawDocumentBuf::from_bytes(bytes).unwrap()
    }

    #[test]
    fn invalid_utf8_gets_u_fffd_and_the_rest_of_the_document_still_reads() {
        let d = doc_with_bad_string();
        assert_eq!(text_at(&d, &["bad"]), "x\u{fffd}y");
        // Keys after the bad value are still found, by get and by pick.
        assert_eq!(text_at(&d, &["email"]), "e@x");
        assert_eq!(text_at(&d, &["n"]), "7");
        let [bad, email, n, a] = pick(Some(&d), ["bad", "email", "n", "a"]);
        assert!(set(bad));
        assert_eq!(
            (text(bad), text(email), text(n), text(a)),
            ("x\u{fffd}y".into(), "e@x".into(), "7".into(), "ok".into())
        );
        // Never a fallback: the bad value is the cell.
        assert_eq!(or_else(text(bad), || "fallback".into()), "x\u{fffd}y");
    }

    #[test]
    fn text_forms() {
        let d = RawDocumentBuf::from_document(&doc! {
            "a": { "b": "x", "n": 5, "f": 2.5, "w": 3.0, "t": true, "z": null,
                   "d": DateTime::from_millis(1_767_225_600_123), "arr": ["1", 2] }
        })
        .unwrap();
        assert_eq!(text_at(&d, &["a", "b"]), "x");
        assert_eq!(text_at(&d, &["a", "n"]), "5");
        assert_eq!(text_at(&d, &["a", "f"]), "2.5");
        assert_eq!(text_at(&d, &["a", "w"]), "3");
        assert_eq!(text_at(&d, &["a", "t"]), "true");
        assert_eq!(text_at(&d, &["a", "z"]), "");
        assert_eq!(text_at(&d, &["a", "missing"]), "");
        assert_eq!(text_at(&d, &["nope", "x"]), "");
        assert_eq!(text_at(&d, &["a", "d"]), "2026-01-01T00:00:00.123Z");
        assert_eq!(text_at(&d, &["a", "arr"]), "1,2");
        assert!(is_set(&d, &["a", "b"]));
        assert!(!is_set(&d, &["a", "z"]));
    }

    #[test]
    fn pick_finds_what_get_finds() {
        let d = RawDocumentBuf::from_document(&doc! {
            "a": 1, "b": { "c": "x" }, "z": null, "e": "last"
        })
        .unwrap();
        let [a, b, missing, z, e] = pick(Some(&d), ["a", "b", "nope", "z", "e"]);
        assert_eq!(text(a), "1");
        assert_eq!(text(pick(doc_of(b), ["c"])[0]), "x");
        assert!(missing.is_none());
        assert_eq!(z, Some(Value::Bson(RawBsonRef::Null)));
        assert!(!set(z) && set(e));
        assert_eq!(text(e), "last");
        assert_eq!(pick(None, ["a"]), [None]);
        assert_eq!(pick(doc_of(a), ["a"]), [None], "not a document");
        // Keys known at run time; the first occurrence of a key wins.
        let mut out = [None, None];
        pick_into(&d, &["e", "a"], &mut out);
        assert_eq!((text(out[0]), text(out[1])), ("last".into(), "1".into()));
    }

    #[test]
    fn iso_matches_to_iso_string() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_767_225_600_123, "2026-01-01T00:00:00.123Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(iso(DateTime::from_millis(ms)), want);
        }
    }
}
