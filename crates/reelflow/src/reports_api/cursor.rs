//! Opaque page cursors: base64url of `1.<snapshot id>.<endpoint id>.<sort index>.<a|d>.<scope
//! hash>.<last key, '_'-separated>`. A cursor pins the snapshot of the first page and carries
//! the sort key of the last row sent; the next page is the rows strictly after that key.
//! Nothing in a cursor is trusted beyond being parsed: the snapshot id is looked up, the
//! endpoint and scope must match the request, and key values are bound as SQL parameters.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub snapshot: i64,
    pub endpoint: String,
    pub sort: usize,
    pub desc: bool,
    pub scope: u64,
    pub key: Vec<i64>,
}

pub fn encode(c: &Cursor) -> String {
    let key: Vec<String> = c.key.iter().map(i64::to_string).collect();
    let text = format!(
        "1.{}.{}.{}.{}.{:016x}.{}",
        c.snapshot,
        c.endpoint,
        c.sort,
        if c.desc { 'd' } else { 'a' },
        c.scope,
        key.join("_")
    );
    URL_SAFE_NO_PAD.encode(text)
}

pub fn decode(s: &str) -> Option<Cursor> {
    if s.len() > 512 {
        return None;
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let parts: Vec<&str> = text.split('.').collect();
    let [version, snapshot, endpoint, sort, dir, scope, key] = parts.as_slice() else {
        return None;
    };
    if *version != "1" || endpoint.is_empty() || !endpoint.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return None;
    }
    let key = key
        .split('_')
        .map(|k| k.parse::<i64>().ok())
        .collect::<Option<Vec<i64>>>()?;
    Some(Cursor {
        snapshot: snapshot.parse().ok()?,
        endpoint: endpoint.to_string(),
        sort: sort.parse().ok()?,
        desc: match *dir {
            "a" => false,
            "d" => true,
            _ => return None,
        },
        scope: u64::from_str_radix(scope, 16).ok()?,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let c = Cursor {
            snapshot: 7,
            endpoint: "company_genre_yearly".into(),
            sort: 1,
            desc: true,
            scope: 0xdead_beef_0123_4567,
            key: vec![28, -3, 9_000_000_000],
        };
        let s = encode(&c);
        assert!(
            s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{s}"
        );
        assert_eq!(decode(&s), Some(c));
        for bad in ["", "!!", "bm9wZQ", &URL_SAFE_NO_PAD.encode("1.7.x.0.a.00.1_")] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
