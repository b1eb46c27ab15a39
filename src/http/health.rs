//! `/heartbeat` (the ELB health check: cheap, no database round trip) and
//! `/metrics` (Prometheus text format). No auth on either.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, MongoHealth};
use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(heartbeat))
        .routes(routes!(metrics))
        .routes(routes!(ready))
}

#[derive(Serialize, ToSchema)]
pub struct Heartbeat {
    #[schema(example = "OK")]
    status: &'static str,
}

const OK: &str = "OK";

#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "OK")]
    status: &'static str,
    mongodb: MongoHealth,
}

#[utoipa::path(
    get,
    path = "/heartbeat",
    tag = "health",
    summary = "Liveness (ELB health check; no database round trip)",
    responses(
        (status = 200, description = "Serving", body = Heartbeat),
        (status = 503, description = "Draining for shutdown", body = ErrorBody),
    )
)]
async fn heartbeat(State(state): State<AppState>) -> axum::response::Response {
    if state.shutdown.is_draining() {
        // The ELB takes the instance out of service; in-flight exports finish.
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining for shutdown")
            .into_response();
    }
    Json(Heartbeat { status: OK }).into_response()
}

/// Readiness view (ours): the cached MongoDB ping, no database round trip.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    summary = "Readiness: the cached background MongoDB ping",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "MongoDB check failing, not run yet, or draining", body = ErrorBody),
    )
)]
async fn ready(State(state): State<AppState>) -> axum::response::Response {
    let health = state.mongo_health.read().ok().and_then(|h| h.clone());
    match health {
        Some(h) if h.ok && !state.shutdown.is_draining() => Json(Ready {
            status: OK,
            mongodb: h,
        })
        .into_response(),
        Some(h) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not ready")
            .with_payload(json!({ "mongodb": h, "draining": state.shutdown.is_draining() }))
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no MongoDB check yet",
        )
        .into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
    )
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
