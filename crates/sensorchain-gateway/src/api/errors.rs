//! [`ApiError`]: every error of the API as a status code and
//! `{"error": {"code", "message"}}`, the codes of store errors and refused
//! submissions, and the answers of the router's fallbacks.

use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use sensorchain_core::hash::Hash32;
use sensorchain_core::state::TxRuleError;

use super::MAX_ECHO_CHARS;
use crate::node::Rejected;
use crate::store::StoreError;

/// Most characters of any error message.
pub(super) const MAX_MESSAGE_CHARS: usize = 512;

/// User input cut to [`MAX_ECHO_CHARS`] characters (with "…") for an error
/// message.
pub fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_ECHO_CHARS {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX_ECHO_CHARS).collect();
        format!("{head}…")
    }
}

/// An API error: a status code and `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A snake_case code.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(super) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503 `no_chain`: the store holds no block yet.
    pub(super) fn no_chain() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_chain",
            "the store is empty",
        )
    }

    /// 404 `unknown_tx`: no transaction has the id `id`.
    pub(super) fn unknown_tx(id: &Hash32) -> Self {
        Self::not_found("unknown_tx", format!("no transaction with id {id}"))
    }

    /// The answer to a panic or a failed task: nothing of its cause (that
    /// is in the gateway's log).
    pub fn internal_generic() -> Self {
        Self::internal("internal error (the details are in the gateway's log)")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.message.chars().count() > MAX_MESSAGE_CHARS {
            let head: String = self.message.chars().take(MAX_MESSAGE_CHARS).collect();
            format!("{head}…")
        } else {
            self.message
        };
        let body = json!({ "error": { "code": self.code, "message": message } });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            StoreError::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "store_corrupt"),
            StoreError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "store_busy"),
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        };
        tracing::warn!("API store error: {e}");
        ApiError::new(status, code, e.to_string())
    }
}

/// The status of a reason code that a leader gave (a forwarded
/// transaction's refusal).
fn reason_status(r: sensorchain_core::link::RejectReason) -> (StatusCode, &'static str) {
    use sensorchain_core::link::RejectReason as R;
    let status = match r {
        R::Malformed => StatusCode::BAD_REQUEST,
        R::WrongSigner | R::NotPermitted => StatusCode::FORBIDDEN,
        R::BadSignature => StatusCode::UNAUTHORIZED,
        R::Replay => StatusCode::CONFLICT,
        R::StorageFailed => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, r.as_str())
}

/// The status and code a refused submission is answered with.
pub fn rejection_status(e: &Rejected) -> (StatusCode, &'static str) {
    match e {
        Rejected::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
        Rejected::WrongSigner => (StatusCode::FORBIDDEN, "wrong_signer"),
        Rejected::UnknownSigner => (StatusCode::FORBIDDEN, "unknown_signer"),
        Rejected::BadSignature => (StatusCode::UNAUTHORIZED, "bad_signature"),
        Rejected::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        Rejected::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        Rejected::Storage(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_failed"),
        Rejected::Leader { reason, .. } => reason_status(*reason),
        Rejected::Rule(r) => match r {
            TxRuleError::Replay { .. } => (StatusCode::CONFLICT, "replay"),
            TxRuleError::UnknownSigner => (StatusCode::FORBIDDEN, "unknown_signer"),
            TxRuleError::NotPermitted { .. } => (StatusCode::FORBIDDEN, "not_permitted"),
            TxRuleError::BadSignature(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            TxRuleError::BlockFull => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            TxRuleError::Reading(_) => (StatusCode::UNPROCESSABLE_ENTITY, "out_of_range"),
            TxRuleError::DeviceNotAssigned
            | TxRuleError::UnknownRecipient
            | TxRuleError::RecipientNotAuthorised => {
                (StatusCode::UNPROCESSABLE_ENTITY, "not_authorised")
            }
            TxRuleError::TimestampTooFarAhead => {
                (StatusCode::UNPROCESSABLE_ENTITY, "timestamp_too_far_ahead")
            }
            TxRuleError::WrongRole => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_role"),
            TxRuleError::InvalidPermissions => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_permissions")
            }
            TxRuleError::LastAdmin => (StatusCode::UNPROCESSABLE_ENTITY, "last_admin"),
            TxRuleError::NothingToRevoke => (StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_revoke"),
            TxRuleError::NothingToGrant => (StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_grant"),
            TxRuleError::AlreadyVoted => (StatusCode::UNPROCESSABLE_ENTITY, "already_voted"),
            TxRuleError::NothingToChange => (StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_change"),
            TxRuleError::BadKey(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_key"),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        },
    }
}

impl From<Rejected> for ApiError {
    fn from(e: Rejected) -> Self {
        let (status, code) = rejection_status(&e);
        ApiError::new(status, code, e.to_string())
    }
}

pub(super) type ApiResult<T = Response> = Result<T, ApiError>;

pub(super) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(
        "no_route",
        format!("no route for {method} {}", clip(uri.path())),
    )
}

pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", clip(uri.path())),
    )
}
