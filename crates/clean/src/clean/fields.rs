//! Field writers shared by the files' rules: text, integers, booleans, Python literals.

use super::*;

// Field helpers. `u` is the file's unparsable counters, `c` the column's index in them.

/// A text field: empty is NULL; a NUL byte makes it NULL and unparsable.
#[inline]
pub(super) fn text(w: &mut CopyWriter, b: &[u8], u: &mut [u64], c: usize) {
    if b.is_empty() {
        w.null();
    } else if b.contains(&0) {
        u[c] += 1;
        w.null();
    } else {
        w.text(b);
    }
}

/// A bigint field (`zero_is_null`: the dataset's 0 for "unknown" becomes NULL).
#[inline]
pub(super) fn bigint(w: &mut CopyWriter, b: &[u8], u: &mut [u64], c: usize, zero_is_null: bool) {
    if b.is_empty() {
        return w.null();
    }
    match parse_i64(b) {
        Some(0) if zero_is_null => w.null(),
        // Checked digits: the source text is what PostgreSQL would read.
        Some(_) => w.raw(b),
        // An integral float (`373554033.0`, pandas' shape): the integer, written out.
        None => match parse_integral_float(b) {
            Some(0) if zero_is_null => w.null(),
            Some(v) => w.int(v),
            None => {
                u[c] += 1;
                w.null();
            }
        },
    }
}

/// A field kept as its source text when `valid` accepts it, else NULL and unparsable.
#[inline]
/// Writes `b` when `valid`, else NULL (counting a non-empty value as unparsable); returns
/// whether the value was written.
pub(super) fn checked(w: &mut CopyWriter, b: &[u8], u: &mut [u64], c: usize, valid: fn(&[u8]) -> bool) -> bool {
    if b.is_empty() {
        w.null();
        false
    } else if valid(b) {
        w.raw(b);
        true
    } else {
        u[c] += 1;
        w.null();
        false
    }
}

#[inline]
pub(super) fn boolean(w: &mut CopyWriter, b: &[u8], u: &mut [u64], c: usize) {
    if b.is_empty() {
        return w.null();
    }
    match parse_bool(b) {
        Some(v) => w.bool(v),
        None => {
            u[c] += 1;
            w.null();
        }
    }
}

/// Parses a literal cell. `Ok(None)` for an empty cell; `Err(())` (counted by the caller) when
/// it is not a Python literal.
#[inline]
pub(super) fn literal_cell<'d>(doc: &'d mut Document, b: &'d [u8]) -> Result<Option<Lit<'d>>, ()> {
    if b.is_empty() {
        return Ok(None);
    }
    let s = std::str::from_utf8(b).map_err(|_| ())?;
    doc.parse(s).map(Some).map_err(|_| ())
}

/// A literal list cell: its elements, or `None` (the cell counted as unparsable when it was
/// not empty).
#[inline]
pub(super) fn literal_list<'d>(doc: &'d mut Document, b: &'d [u8], u: &mut [u64], c: usize) -> Option<Items<'d>> {
    match literal_cell(doc, b) {
        Ok(Some(v)) => {
            let items = v.items();
            if items.is_none() && !v.is_none() {
                u[c] += 1;
            }
            items
        }
        Ok(None) => None,
        Err(()) => {
            u[c] += 1;
            None
        }
    }
}

/// Text from a literal: `None` is NULL, a string is written, anything else (or a string with
/// NUL) is NULL and marks the cell bad.
#[inline]
pub(super) fn lit_text(w: &mut CopyWriter, v: Option<Lit<'_>>, bad: &mut bool) {
    match v {
        Some(v) if v.is_none() => w.null(),
        Some(v) => match v.as_bytes() {
            Some(s) if !v.has_nul() => w.text(s),
            _ => {
                *bad = true;
                w.null();
            }
        },
        None => {
            *bad = true;
            w.null();
        }
    }
}

/// An integer from a literal, range-checked for the column type.
#[inline]
pub(super) fn lit_int(w: &mut CopyWriter, v: Option<Lit<'_>>, min: i64, max: i64, bad: &mut bool) {
    match v {
        Some(v) if v.is_none() => w.null(),
        Some(v) => match v.as_i64() {
            Some(i) if (min..=max).contains(&i) => w.int(i),
            _ => {
                *bad = true;
                w.null();
            }
        },
        None => {
            *bad = true;
            w.null();
        }
    }
}

pub(super) fn positive(v: Option<Lit<'_>>) -> Option<i64> {
    v.and_then(Lit::as_i64).filter(|&i| i > 0)
}
