//! Checking client input before anything reaches the cluster: names, versions, bodies.
//! Each failure is a 400 that names the field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::Value;

use crate::error::ApiError;
use crate::limits::MAX_NAME_LEN;

/// A store name: it becomes an atom on the wire, so `[A-Za-z0-9_-]{1,255}`.
pub fn store(s: &str) -> Result<&str, ApiError> {
    if s.is_empty()
        || s.len() > MAX_NAME_LEN
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::bad_field(
            "store",
            "must be 1 to 255 characters of [A-Za-z0-9_-]",
        ));
    }
    Ok(s)
}

/// A stream, subscription or snapshot id: 1–255 bytes of UTF-8 without control characters.
pub fn name<'a>(field: &str, s: &'a str) -> Result<&'a str, ApiError> {
    if s.is_empty() || s.len() > MAX_NAME_LEN || s.chars().any(char::is_control) {
        return Err(ApiError::bad_field(
            field,
            "must be 1 to 255 bytes of text without control characters",
        ));
    }
    Ok(s)
}

/// A non-negative version in a path or query.
pub fn version(field: &str, s: &str) -> Result<i64, ApiError> {
    match s.parse::<i64>() {
        Ok(v) if v >= 0 => Ok(v),
        _ => Err(ApiError::bad_field(field, "must be a non-negative integer")),
    }
}

/// The body as JSON: 413 when over the limit, 400 naming `body` when not JSON.
pub fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body exceeds the limit (EX_ESDB_GATER_MAX_BODY_BYTES)",
            )
        } else {
            ApiError::bad_field("body", r.body_text())
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_field("body", format!("not valid JSON ({e})")))
}

/// A string member of an object.
pub fn str_field<'a>(obj: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    obj.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_field(field, "must be a string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert!(store("reg_gh").is_ok() && store("a-b_9").is_ok());
        for bad in ["", "a b", "ä", "a/b", &"x".repeat(256)] {
            assert!(store(bad).is_err(), "{bad:?}");
        }
        assert!(name("stream", "order-1 ä").is_ok());
        assert!(name("stream", "a\nb").is_err() && name("stream", "").is_err());
        assert_eq!(version("version", "7").ok(), Some(7));
        assert!(version("version", "-1").is_err() && version("version", "x").is_err());
        let e = version("version", "x").expect_err("refused");
        assert_eq!(
            e.extra.get("field").and_then(Value::as_str),
            Some("version")
        );
    }
}
