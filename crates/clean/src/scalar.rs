//! Parsing CSV field bytes into checked scalars without allocating.
//!
//! Every check here mirrors what PostgreSQL's input functions accept for the column type, so a
//! value the cleaner lets through never fails the `COPY` later.

/// A decimal integer: an optional `-` then ASCII digits, fitting in an `i64`.
#[inline]
pub(crate) fn parse_i64(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    if digits.len() <= 18 {
        // Cannot overflow: no checked arithmetic on the hot path.
        let mut m: i64 = 0;
        for &c in digits {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            m = m * 10 + i64::from(d);
        }
        return Some(if negative { -m } else { m });
    }
    let mut m: u64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        m = m.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    if negative {
        (m <= i64::MAX as u64 + 1).then(|| (m as i64).wrapping_neg())
    } else {
        i64::try_from(m).ok()
    }
}

/// An integer column's value: a plain decimal integer ([`parse_i64`], the fast path), or an
/// exact integer written as a float the way pandas re-saves integral columns (`373554033.0`,
/// `5415.00`, `1e3`, `1.5E2`, `-0.0`). Anything with a non-zero fractional part (`12.5`),
/// outside `i64`, or not a number is `None`. (The writers call the two paths themselves: a
/// plain integer's text is copied as is, the other shape is written as the integer.)
#[cfg(test)]
pub(crate) fn parse_integral(b: &[u8]) -> Option<i64> {
    match parse_i64(b) {
        Some(v) => Some(v),
        None => parse_integral_float(b),
    }
}

/// The slow path of [`parse_integral`]: `-?D*(.D*)?([eE][+-]?D+)?` with at least one mantissa
/// digit, read exactly (no float conversion, no allocation).
#[cold]
pub(crate) fn parse_integral_float(b: &[u8]) -> Option<i64> {
    let (negative, b) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    let (mantissa, exp) = match b.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    let int_len = mantissa.iter().take_while(|c| c.is_ascii_digit()).count();
    let (int, frac) = match &mantissa[int_len..] {
        [] => (mantissa, &b""[..]),
        [b'.', frac @ ..] if frac.iter().all(u8::is_ascii_digit) => (&mantissa[..int_len], frac),
        _ => return None,
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    // The exponent, clamped: beyond ±10^6 only an all-zero mantissa gives an i64.
    let exp: i64 = match exp {
        None => 0,
        Some(e) => {
            let (neg, digits) = match e.first()? {
                b'-' => (true, &e[1..]),
                b'+' => (false, &e[1..]),
                _ => (false, e),
            };
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v = digits
                .iter()
                .try_fold(0i64, |acc, &c| {
                    let v = acc * 10 + i64::from(c - b'0');
                    (v <= 1_000_000).then_some(v)
                })
                .unwrap_or(1_000_001);
            if neg {
                -v
            } else {
                v
            }
        }
    };
    // Significant digits: int ++ frac without leading zeros; trailing zeros move into the
    // exponent. value = digits * 10^shift.
    let all = || int.iter().chain(frac.iter()).copied();
    let total = int.len() + frac.len();
    let lead = all().take_while(|&c| c == b'0').count();
    if lead == total {
        return Some(0);
    }
    let trail = all().rev().take_while(|&c| c == b'0').count();
    let sig = total - lead - trail;
    let shift = exp - frac.len() as i64 + trail as i64;
    if shift < 0 || sig as i64 + shift > 19 {
        // A fractional part, or more than 19 digits: not an i64.
        return None;
    }
    let mut m: u128 = 0;
    for c in all().skip(lead).take(sig) {
        m = m * 10 + u128::from(c - b'0');
    }
    for _ in 0..shift {
        m *= 10;
    }
    if negative {
        (m <= i64::MAX as u128 + 1).then(|| (m as i64).wrapping_neg())
    } else {
        i64::try_from(m).ok()
    }
}

/// A key (`id`, `movieId`, `userId`) written as plain ASCII digits, value above zero: the
/// hot path of [`parse_positive_id`], whose text can be copied to the output as is.
#[inline]
pub(crate) fn parse_plain_id(b: &[u8]) -> Option<i64> {
    if b.first() == Some(&b'-') {
        return None;
    }
    parse_i64(b).filter(|&v| v > 0)
}

/// A key (`id`, `movieId`, `userId`): a positive integer, plain or integral-float
/// ([`parse_integral`]: `862.0` is 862).
#[inline]
pub(crate) fn parse_positive_id(b: &[u8]) -> Option<i64> {
    match parse_plain_id(b) {
        Some(v) => Some(v),
        None => parse_integral_float(b).filter(|&v| v > 0),
    }
}

/// Whether `b` is a float PostgreSQL's `double precision` accepts and Rust reads as finite.
/// Overflow (`1e400`) and underflow to zero of a non-zero mantissa (`1e-400`) are refused,
/// as PostgreSQL refuses them ("out of range").
#[inline]
pub(crate) fn is_f64(b: &[u8]) -> bool {
    if is_plain_decimal(b) {
        return true;
    }
    match parse_f64(b) {
        Some(v) => v != 0.0 || !has_nonzero_mantissa(b),
        None => false,
    }
}

/// Same as [`is_f64`] for PostgreSQL `real` (single precision).
#[inline]
pub(crate) fn is_f32(b: &[u8]) -> bool {
    if is_plain_decimal(b) {
        return true;
    }
    match parse_f64(b) {
        Some(v) => {
            let f = v as f32;
            f.is_finite() && (f != 0.0 || !has_nonzero_mantissa(b))
        }
        None => false,
    }
}

/// The common shape `-?D+(.D*)?` with at most 38 digits on each side of the point: always a
/// finite, non-underflowing `real` and `double precision`, no need to convert it.
#[inline]
fn is_plain_decimal(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"-").unwrap_or(b);
    let int = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int == 0 || int > 38 {
        return false;
    }
    match &b[int..] {
        [] => true,
        [b'.', frac @ ..] => frac.len() <= 38 && frac.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

#[inline]
fn parse_f64(b: &[u8]) -> Option<f64> {
    // Rust also reads "inf" and "NaN": the finiteness check drops them.
    let s = std::str::from_utf8(b).ok()?;
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}

fn has_nonzero_mantissa(b: &[u8]) -> bool {
    b.iter()
        .take_while(|&&c| c != b'e' && c != b'E')
        .any(|&c| (b'1'..=b'9').contains(&c))
}

/// A real calendar date written `YYYY-MM-DD` (year 0001 to 9999).
pub(crate) fn is_date(b: &[u8]) -> bool {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (Some(y), Some(m), Some(d)) = (num(&b[0..4]), num(&b[5..7]), num(&b[8..10])) else {
        return false;
    };
    if y == 0 || !(1..=12).contains(&m) || d == 0 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    d <= days
}

/// Python's `True`/`False`.
#[inline]
pub(crate) fn parse_bool(b: &[u8]) -> Option<bool> {
    match b {
        b"True" => Some(true),
        b"False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        let cases: &[(&str, Option<i64>)] = &[
            ("0", Some(0)),
            ("42", Some(42)),
            ("-7", Some(-7)),
            ("007", Some(7)),
            ("2787965087", Some(2_787_965_087)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("", None),
            ("-", None),
            ("+5", None),
            ("1.0", None),
            (" 1", None),
            ("1997-08-20", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_i64(text.as_bytes()), want, "{text:?}");
        }
        assert_eq!(parse_positive_id(b"0"), None);
        assert_eq!(parse_positive_id(b"-3"), None);
        assert_eq!(parse_positive_id(b"862"), Some(862));
    }

    #[test]
    fn integral_floats_are_integers() {
        let cases: &[(&str, Option<i64>)] = &[
            ("373554033.0", Some(373_554_033)),
            ("5415.0", Some(5415)),
            ("5415.000", Some(5415)),
            ("5415.", Some(5415)),
            ("-7.0", Some(-7)),
            ("-0.0", Some(0)),
            ("0.0", Some(0)),
            (".0", Some(0)),
            ("1e3", Some(1000)),
            ("1E3", Some(1000)),
            ("1e+3", Some(1000)),
            ("1.5E2", Some(150)),
            ("1.25e2", Some(125)),
            ("2.787965087e9", Some(2_787_965_087)),
            ("12500e-2", Some(125)),
            ("1000e-3", Some(1)),
            ("0e999999999", Some(0)),
            ("9223372036854775807.0", Some(i64::MAX)),
            ("-9223372036854775808.0", Some(i64::MIN)),
            ("9.223372036854775807e18", Some(i64::MAX)),
            // A fractional part, out of range, or not a number: unparsable.
            ("12.5", None),
            ("0.5", None),
            ("1.25e1", None),
            ("1e-3", None),
            ("125e-2", None),
            ("9223372036854775808.0", None),
            ("1e19", None),
            ("1e999999999", None),
            ("", None),
            (".", None),
            ("-", None),
            ("e3", None),
            ("1e", None),
            ("1e+", None),
            ("1.0.0", None),
            ("+5.0", None),
            (" 5.0", None),
            ("5.0 ", None),
            ("1,0", None),
            ("inf", None),
            ("NaN", None),
            ("0x10", None),
            ("1997-08-20", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_integral(text.as_bytes()), want, "{text:?}");
        }
        // The plain path is unchanged.
        assert_eq!(parse_integral(b"42"), Some(42));
        assert_eq!(parse_integral(b"-007"), Some(-7));
        // Keys: positive only, either shape; the plain-only parser refuses the float shape.
        assert_eq!(parse_positive_id(b"862.0"), Some(862));
        assert_eq!(parse_positive_id(b"8.62e2"), Some(862));
        assert_eq!(parse_positive_id(b"0.0"), None);
        assert_eq!(parse_positive_id(b"-3.0"), None);
        assert_eq!(parse_positive_id(b"862.5"), None);
        assert_eq!(parse_plain_id(b"862"), Some(862));
        assert_eq!(parse_plain_id(b"862.0"), None);
    }

    #[test]
    fn floats() {
        for ok in [
            "21.946943",
            "8.2e-05",
            "0.0",
            "0",
            "81.0",
            "-1.5",
            ".5",
            "5.",
            "1E3",
            "6e-06",
        ] {
            assert!(is_f64(ok.as_bytes()), "{ok}");
            assert!(is_f32(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "abc", "inf", "NaN", "infinity", "1e400", "1e-400", "1,5", " 1", "Beware",
        ] {
            assert!(!is_f64(bad.as_bytes()), "{bad}");
        }
        assert!(is_f64(b"1e300"));
        assert!(!is_f32(b"1e300"));
        assert!(!is_f32(b"1e-50"));
        assert!(is_f32(b"0e-50"));
    }

    #[test]
    fn dates() {
        for ok in ["1995-10-30", "1883-11-19", "2000-02-29", "2016-02-29", "0001-01-01"] {
            assert!(is_date(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "1995-13-01",
            "1995-00-10",
            "1995-02-29",
            "1900-02-29",
            "1995-04-31",
            "0000-01-01",
            "95-10-30",
            "1995/10/30",
            "1995-10-3",
            "10/30/1995",
            "1995-10-30 ",
        ] {
            assert!(!is_date(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool(b"True"), Some(true));
        assert_eq!(parse_bool(b"False"), Some(false));
        assert_eq!(parse_bool(b"TRUE"), None);
        assert_eq!(parse_bool(b" - Written by"), None);
    }
}
