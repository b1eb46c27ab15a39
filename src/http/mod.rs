//! HTTP API: router, middleware (correlation id, request log + metrics,
//! body limit, timeout, panic catcher) and the one place that turns every
//! error — ours or the framework's — into the spec's error shape.

pub mod auth;
mod ccpa;
mod dev;
mod exports;
mod health;
mod openapi;
pub mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::exports::Registry;
use crate::queue::Queue;
use crate::shutdown::Shutdown;
use crate::sink::Sinks;
use crate::store::Store;
use crate::telemetry::Metrics;

/// Largest accepted request body. Requests are a few fields of JSON.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Longest a request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const CORRELATION_HEADER: &str = "x-titan-correlation-id";

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub queue: Queue,
    pub registry: Registry,
    pub sinks: Sinks,
    pub metrics: Metrics,
    pub auth: Arc<auth::Auth>,
    pub shutdown: Shutdown,
    pub signed_url_ttl: Duration,
    /// Last background MongoDB ping (None until the first one ran).
    pub mongo_health: Arc<std::sync::RwLock<Option<MongoHealth>>>,
}

/// Result of the background MongoDB ping.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = MongoCheck)]
pub struct MongoHealth {
    pub ok: bool,
    #[schema(required = true)]
    pub error: Option<String>,
    pub latency_ms: u64,
    pub checked_at: chrono::DateTime<chrono::Utc>,
}

/// The request's correlation id (from the header, or made here).
#[derive(Clone, Debug)]
pub struct CorrelationId(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_else(|| CorrelationId(new_correlation_id())))
    }
}

fn new_correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A caller's correlation id is kept only if it is short and plain: it is
/// echoed in a header and written to logs (no header or log injection).
fn accept_correlation(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| s.to_string())
}

/// The full API router, and `/openapi.json` describing exactly it.
pub fn router(state: AppState, dev_routes: bool) -> Router {
    let (routes, doc) = api(dev_routes).split_for_parts();
    finish(routes.layer(Extension(openapi::Document::new(doc))), state)
}

/// Every documented route: each handler's `#[utoipa::path]` is registered
/// with its route, so the document is the router's own.
fn api(dev_routes: bool) -> OpenApiRouter<AppState> {
    let mut api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(exports::routes())
        .merge(health::routes())
        .routes(routes!(openapi::document));
    if dev_routes {
        api = api.merge(dev::routes());
    }
    // CCPA sets its own timeouts: a deletion may need longer.
    api.layer(timeout(REQUEST_TIMEOUT)).merge(ccpa::routes())
}

/// Only `/heartbeat`, `/ready` and `/metrics` (the `worker` subcommand).
pub fn health_router(state: AppState) -> Router {
    let (routes, _) = health::routes()
        .layer(timeout(REQUEST_TIMEOUT))
        .split_for_parts();
    finish(routes, state)
}

/// Answer 408 (in the error shape) when a request takes longer than `limit`.
fn timeout(limit: Duration) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit)
}

fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .route_layer(middleware::from_fn(remember_route))
        .fallback(|| async { ApiError::not_found("route not found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal().into_response()
        }))
        .layer(middleware::map_response(error_shape))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The matched route template, carried to the outer middleware.
#[derive(Clone)]
struct RouteTemplate(String);

async fn remember_route(req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().replace('{', ":").replace('}', ""));
    let mut res = next.run(req).await;
    if let Some(t) = template {
        res.extensions_mut().insert(RouteTemplate(t));
    }
    res
}

/// Any error response that is not already in the error shape (framework
/// rejections, timeouts, body limits) gets it here.
async fn error_shape(res: Response) -> Response {
    let status = res.status();
    if status.as_u16() < 400 {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_string(),
        StatusCode::REQUEST_TIMEOUT => "request timed out".to_string(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported media type".to_string(),
        s => s.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (mut parts, _) = res.into_parts();
    let shaped = ApiError::new(status, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, shaped.into_body())
}

/// Correlation id in/out, one log line per request (`duration` in ms), and
/// the HTTP metrics by route template.
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let correlation = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(accept_correlation)
        .unwrap_or_else(new_correlation_id);
    req.extensions_mut()
        .insert(CorrelationId(correlation.clone()));
    let method = req.method().clone();
    let span = tracing::info_span!("request", correlation_id = %correlation);
    let mut res = next.run(req).instrument(span.clone()).await;
    let route = res
        .extensions()
        .get::<RouteTemplate>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status().as_u16();
    let elapsed = t0.elapsed();
    if route != "/heartbeat" && route != "/metrics" {
        span.in_scope(|| {
            tracing::info!(
                method = %method,
                route = %route,
                status,
                duration = elapsed.as_millis() as u64,
                "request"
            )
        });
    }
    state
        .metrics
        .observe_http(method.as_str(), &route, status, elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        res.headers_mut().insert(CORRELATION_HEADER, v);
    }
    res
}

/// Ids in paths and queries are ObjectId hex or short slugs: anything else
/// (`..`, operators, control characters) is refused before it reaches a
/// query, as a 400 naming `field`.
pub(crate) fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(field, format!("{field} is not a valid id")))
    }
}

/// Parse a JSON body whatever its content type (as the original's clients
/// expect), mapping every failure to a 400 in the error shape.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not valid UTF-8"))?;
    serde_json::from_str(text).map_err(|e| {
        let why = if e.to_string().contains("recursion limit") {
            "JSON nested too deeply".to_string()
        } else {
            format!("invalid JSON at line {} column {}", e.line(), e.column())
        };
        ApiError::bad_request(why)
    })
}
