//! Reading fields straight out of raw BSON: the hot path never builds a
//! `Document` tree or goes through serde.

use std::borrow::Cow;

use futures::TryStreamExt;
use mongodb::bson::{RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::Cursor;

use crate::store::StoreError;

/// Documents read per batch, and the size of each batched lookup.
pub const BATCH: usize = 1000;

/// The next `BATCH` documents of a cursor: fewer only at its end, none once
/// it is exhausted.
pub async fn next_batch(
    cur: &mut Cursor<RawDocumentBuf>,
) -> Result<Vec<RawDocumentBuf>, StoreError> {
    let mut batch = Vec::with_capacity(BATCH);
    while batch.len() < BATCH {
        match cur.try_next().await? {
            Some(d) => batch.push(d),
            None => break,
        }
    }
    Ok(batch)
}

/// The value at a dotted path (`["fields", "email"]`), if present.
pub fn get<'a>(doc: &'a RawDocument, path: &[&str]) -> Option<RawBsonRef<'a>> {
    let (last, parents) = path.split_last()?;
    let mut cur = doc;
    for p in parents {
        cur = cur.get_document(p).ok()?;
    }
    cur.get(last).ok().flatten()
}

/// The value as text: strings borrowed, numbers/ids/dates formatted, null
/// and missing empty.
pub fn text<'a>(v: Option<RawBsonRef<'a>>) -> Cow<'a, str> {
    match v {
        None | Some(RawBsonRef::Null) | Some(RawBsonRef::Undefined) => Cow::Borrowed(""),
        Some(RawBsonRef::String(s)) => Cow::Borrowed(s),
        Some(RawBsonRef::Boolean(b)) => Cow::Borrowed(if b { "true" } else { "false" }),
        Some(RawBsonRef::Int32(i)) => Cow::Owned(i.to_string()),
        Some(RawBsonRef::Int64(i)) => Cow::Owned(i.to_string()),
        Some(RawBsonRef::Double(d)) => Cow::Owned(fmt_double(d)),
        Some(RawBsonRef::ObjectId(o)) => Cow::Owned(o.to_hex()),
        Some(RawBsonRef::DateTime(d)) => Cow::Owned(iso(d)),
        Some(RawBsonRef::Array(a)) => {
            let parts: Vec<Cow<'a, str>> = a.into_iter().flatten().map(|v| text(Some(v))).collect();
            Cow::Owned(parts.join(","))
        }
        Some(other) => match other.to_raw_bson().try_into() {
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
) -> [Option<RawBsonRef<'a>>; N] {
    let mut out = [None; N];
    if let Some(doc) = doc {
        pick_into(doc, &keys, &mut out);
    }
    out
}

/// [`pick`] for keys known only at run time (a campaign's preferences):
/// `out[i]` gets the value of `keys[i]`; `out` is not cleared first.
pub fn pick_into<'a>(doc: &'a RawDocument, keys: &[&str], out: &mut [Option<RawBsonRef<'a>>]) {
    let mut left = keys.len();
    for el in doc.iter_elements() {
        // A malformed tail ends the scan: what was found so far stands, as
        // with `get`.
        let Ok(el) = el else { break };
        let key = el.key();
        let Some(i) = keys.iter().position(|k| *k == key) else {
            continue;
        };
        // The first occurrence wins, as with `get`.
        if out[i].is_none() {
            out[i] = el.value().ok();
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
}

/// A value as a sub-document, if it is one.
pub fn doc_of(v: Option<RawBsonRef<'_>>) -> Option<&RawDocument> {
    match v {
        Some(RawBsonRef::Document(d)) => Some(d),
        _ => None,
    }
}

/// Present and not null.
pub fn set(v: Option<RawBsonRef<'_>>) -> bool {
    !matches!(
        v,
        None | Some(RawBsonRef::Null) | Some(RawBsonRef::Undefined)
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

/// RFC 3339 UTC with milliseconds, as the original's `toISOString()`.
/// (`to_rfc3339_opts`, not a `format` string: no pattern parsed per cell.)
pub fn iso(d: mongodb::bson::DateTime) -> String {
    chrono::DateTime::from_timestamp_millis(d.timestamp_millis())
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Present and not null.
pub fn is_set(doc: &RawDocument, path: &[&str]) -> bool {
    set(get(doc, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, DateTime, RawDocumentBuf};

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
        assert_eq!(z, Some(RawBsonRef::Null));
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
