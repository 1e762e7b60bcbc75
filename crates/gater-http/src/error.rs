//! Every failure as `{"error": kind, "message": text}` with a fitting status code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::auth::TokenError;

/// An HTTP error response. `kind` is a stable machine-readable word; `message` is for
/// people and never holds a secret or a token.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// Stable kind, for example `bad_request`, `not_found`, `wrong_expected_version`.
    pub kind: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Extra members of the body (for example `"current"` on a version conflict).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// An error with no extra members.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Adds a member to the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// 400 about one field of the request; the body names it in `"field"`.
    pub fn bad_field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{field}: {message}"),
        )
        .with("field", field)
    }

    /// 404 for a store the cluster does not list.
    pub fn unknown_store(store: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "store_not_found",
            format!("store `{store}` is not listed by the cluster"),
        )
        .with("store", store)
    }

    /// 404 for anything else.
    pub fn not_found(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, kind, message)
    }

    /// 503: not ready or no workers.
    pub fn unavailable(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, message)
    }

    /// 403 for a token that does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 500 for what should not happen; the message is logged, not the details.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        let kind = match e {
            TokenError::Missing => "missing_token",
            TokenError::Malformed => "malformed_token",
            TokenError::BadSignature => "invalid_token",
            TokenError::Expired => "expired_token",
        };
        ApiError::new(StatusCode::UNAUTHORIZED, kind, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.kind));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        let mut resp = (self.status, axum::Json(Value::Object(body))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
