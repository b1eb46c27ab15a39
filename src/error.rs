//! Errors as types, mapped to the spec's error shape in one place:
//! `{"error": {"status": 400, "message": "...", "payload": {...}}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// An error a client sees. `message` and `payload` must never carry PII or
/// internals (stack traces, driver errors): internal failures are logged and
/// answered with a generic 500.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub payload: Option<Value>,
}

/// Named error codes of the original service, carried in `payload.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidExportType,
    CampaignNotFound,
    NoMarketsFound,
    MissingDateKey,
    InvalidDateKeyType,
    InvalidDateKey,
    PromotersNotFound,
    MissingCodeFromMarket,
    DeleteFailed,
    /// *ours*: on a cancelled export's `error.payload.code`.
    Cancelled,
    /// *ours*: cancel of an export that already reached a final status.
    ExportNotActive,
    // Ours (spec: exports.md, Failures).
    DestinationDenied,
    DestinationMissing,
    DestinationNotConfigured,
    PublishFailed,
    DatabaseError,
    InternalError,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidExportType => "InvalidExportType",
            Code::CampaignNotFound => "CampaignNotFound",
            Code::NoMarketsFound => "NoMarketsFound",
            Code::MissingDateKey => "MissingDateKey",
            Code::InvalidDateKeyType => "InvalidDateKeyType",
            Code::InvalidDateKey => "InvalidDateKey",
            Code::PromotersNotFound => "PromotersNotFound",
            Code::MissingCodeFromMarket => "MissingCodeFromMarket",
            Code::DeleteFailed => "DeleteFailed",
            Code::Cancelled => "Cancelled",
            Code::ExportNotActive => "ExportNotActive",
            Code::DestinationDenied => "DestinationDenied",
            Code::DestinationMissing => "DestinationMissing",
            Code::DestinationNotConfigured => "DestinationNotConfigured",
            Code::PublishFailed => "PublishFailed",
            Code::DatabaseError => "DatabaseError",
            Code::InternalError => "InternalError",
        }
    }
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            payload: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// A 400 about one request field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::bad_request(message).with_payload(json!({ "field": field }))
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    /// A generic 500; the cause is logged by the caller, never sent.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
    /// An error with the original's named code in `payload.code`.
    pub fn coded(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self::new(status, message).with_payload(json!({ "code": code.as_str() }))
    }
    /// Merge extra keys into the payload.
    pub fn with_payload(mut self, extra: Value) -> Self {
        match (&mut self.payload, extra) {
            (Some(Value::Object(have)), Value::Object(add)) => have.extend(add),
            (slot, add) => *slot = Some(add),
        }
        self
    }

    /// The body of the error shape.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                message: self.message.clone(),
                payload: self.payload.clone(),
            },
        }
    }
}

/// The error shape of every 4xx/5xx response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    message: String,
    /// Extra detail (`field`, `code`, `validTypes`, ...), never PII.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false, value_type = Option<HashMap<String, Value>>)]
    payload: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Internal failures (database, S3) become a logged 500.
impl From<mongodb::error::Error> for ApiError {
    fn from(e: mongodb::error::Error) -> Self {
        tracing::error!(error = %crate::store::redact_mongo(&e), "database error");
        ApiError::internal()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::internal()
    }
}

/// A type's refusal at POST time: 400 with its code.
impl From<crate::exports::Invalid> for ApiError {
    fn from(e: crate::exports::Invalid) -> Self {
        match e {
            crate::exports::Invalid::Refused {
                code,
                message,
                payload,
            } => {
                let err = ApiError::coded(StatusCode::BAD_REQUEST, code, message);
                match payload {
                    Some(p) => err.with_payload(p),
                    None => err,
                }
            }
            crate::exports::Invalid::Store(e) => e.into(),
        }
    }
}

/// A CCPA deletion that stopped short: 500 `DeleteFailed`, with what it
/// did before (a retry completes the rest).
impl From<crate::ccpa::CcpaError> for ApiError {
    fn from(e: crate::ccpa::CcpaError) -> Self {
        let done = serde_json::to_value(&*e.done).unwrap_or_default();
        ApiError::coded(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::DeleteFailed,
            e.message,
        )
        .with_payload(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ErrorBody {
        fn json(&self) -> Value {
            serde_json::to_value(self).unwrap()
        }
    }

    #[test]
    fn shape_matches_spec() {
        let e = ApiError::field("exportType", "exportType is required");
        assert_eq!(
            e.body().json(),
            json!({"error": {"status": 400, "message": "exportType is required", "payload": {"field": "exportType"}}})
        );
        let e = ApiError::coded(
            StatusCode::BAD_REQUEST,
            Code::InvalidDateKey,
            "dateKey must be all digits",
        )
        .with_payload(json!({"field": "dateKey"}));
        assert_eq!(
            e.body().json()["error"]["payload"],
            json!({"code": "InvalidDateKey", "field": "dateKey"})
        );
        assert!(ApiError::internal().body().json()["error"]
            .get("payload")
            .is_none());
    }
}
