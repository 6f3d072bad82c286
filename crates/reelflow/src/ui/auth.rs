//! The page's security: session cookies exchanged once for the admin token, same-origin checks
//! for every state-changing request, and the response headers (strict CSP) of every page.
//!
//! A session cookie is `v1.<expires unix seconds>.<random nonce>.<hex HMAC-SHA256>`, signed with
//! a key derived from the admin token, so it is stateless (every replica accepts it), changing
//! the token ends every session, and the cookie never carries the token itself.

use axum::http::{header, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "reelflow_session";

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The session signing key for an admin token.
pub fn session_key(token: &str) -> [u8; 32] {
    hmac_sha256(b"reelflow ui session v1", token.as_bytes())
}

/// A new session value that expires at `expires` (unix seconds).
pub fn issue(key: &[u8; 32], expires: i64) -> String {
    let nonce: u64 = rand::random();
    let body = format!("v1.{expires}.{nonce:016x}");
    let mac = hmac_sha256(key, body.as_bytes());
    format!("{body}.{}", hex::encode(mac))
}

/// Whether `value` is a session signed with `key` that has not expired at `now`.
pub fn verify(key: &[u8; 32], value: &str, now: i64) -> bool {
    let Some((body, mac)) = value.rsplit_once('.') else {
        return false;
    };
    let Ok(mac) = hex::decode(mac) else {
        return false;
    };
    let expected = hmac_sha256(key, body.as_bytes());
    if !bool::from(expected.as_slice().ct_eq(&mac)) {
        return false;
    }
    let mut parts = body.split('.');
    parts.next() == Some("v1")
        && parts
            .next()
            .and_then(|e| e.parse::<i64>().ok())
            .is_some_and(|e| e > now)
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request came over TLS (directly or through a proxy that says so).
pub fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().map(str::trim) == Some("https"))
}

/// A state-changing request must come from this site: `Sec-Fetch-Site: same-origin` when the
/// browser sends it, and an `Origin` whose host is the request's `Host` (or the
/// `X-Forwarded-Host` a reverse proxy set). A request with neither header is refused (browsers
/// send at least one on a POST).
pub fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        if site != "same-origin" {
            return Err("cross-site request refused (Sec-Fetch-Site)");
        }
    }
    match (get("origin"), get("host")) {
        (Some(origin), Some(host)) => {
            let stripped = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .unwrap_or("");
            let forwarded = get("x-forwarded-host").and_then(|h| h.split(',').next()).map(str::trim);
            if stripped.eq_ignore_ascii_case(host) || forwarded.is_some_and(|f| stripped.eq_ignore_ascii_case(f)) {
                Ok(())
            } else {
                Err("cross-origin request refused (Origin does not match Host)")
            }
        }
        (Some(_), None) => Err("request without Host refused"),
        (None, _) if get("sec-fetch-site").is_some() => Ok(()),
        (None, _) => Err("request without Origin or Sec-Fetch-Site refused"),
    }
}

/// `Set-Cookie` for a new session or (with `max_age` 0) for logging out.
pub fn set_cookie(value: &str, max_age: i64, https: bool) -> HeaderValue {
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie is ASCII")
}

/// Headers on every page and fragment: no inline script or style can run, no framing.
pub fn harden(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "same-origin");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sessions_expire_and_are_bound_to_the_key() {
        let k = session_key("token-a");
        let s = issue(&k, 1_000);
        assert!(verify(&k, &s, 999));
        assert!(!verify(&k, &s, 1_000));
        assert!(!verify(&session_key("token-b"), &s, 999));
        let forged = s.replacen("v1.1000.", "v1.9999.", 1);
        assert!(!verify(&k, &forged, 999));
        assert!(!verify(&k, "garbage", 0));
    }
}
