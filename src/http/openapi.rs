//! `GET /openapi.json`: the OpenAPI 3 description of the HTTP API (spec:
//! api.md), so clients and the contract run (`scripts/contract`,
//! schemathesis) share one truth. Each path is its handler's own
//! `#[utoipa::path]`, registered with its route (`utoipa-axum`), and its
//! bodies are the types the handler returns (`view::ExportDocument`,
//! `error::ErrorBody`, `ccpa::audit::Record`, ...), so the document
//! describes what is sent. This module holds the document's frame (info,
//! security, the errors every route or every route of a tag can answer)
//! and the descriptions of what the handlers read field by field (the
//! POST body, the sort parameters). The `exportType` enums come from the
//! live `Registry`.

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::view::Compression;
use crate::error::ErrorBody;
use crate::exports::Registry;

/// The document of the routes the router serves (see `http::api`): the
/// paths come from the handlers' own `#[utoipa::path]`, registered with
/// the routes themselves, so the two cannot drift apart. Serialized once,
/// at start-up: every request is handed the same bytes.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    pub fn new(mut api: utoipa::openapi::OpenApi) -> Self {
        // Added to every path, so after the routes are in.
        CommonErrors.modify(&mut api);
        Self(Bytes::from(serde_json::to_vec(&api).unwrap_or_default()))
    }

    #[cfg(test)]
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.0).expect("the document is JSON")
    }
}

#[utoipa::path(
    get,
    operation_id = "openapi_json",
    path = "/openapi.json",
    tag = "health",
    summary = "This document",
    responses(
        (status = 200, description = "OpenAPI document", body = Object),
    )
)]
pub async fn document(Extension(doc): Extension<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vf-export",
        description = "Verified Fan export service: streams campaign data from MongoDB to CSV in S3. \
Every error, from every route and from the framework (unknown route 404, wrong method 405, \
body too large 413, bad JSON 400, timeout 408), has the body `{\"error\": {\"status\", \"message\", \"payload\"?}}`. \
Requests may carry `x-titan-correlation-id`; it is echoed in the response header of the same name."
    ),
    // The rest are collected from the handlers' bodies; query parameters'
    // types are not.
    components(schemas(SortField, SortOrder)),
    modifiers(&BearerJwt),
    tags(
        (name = "exports", description = "Request, read, list and cancel exports"),
        (name = "ccpa", description = "Privacy deletion"),
        (name = "health", description = "Liveness, readiness, metrics (no auth)"),
        (name = "dev", description = "Development routes: 404 unless DEV_ROUTES=true"),
    )
)]
pub struct ApiDoc;

struct BearerJwt;

impl Modify for BearerJwt {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 (JWT_SECRET) or RS256/ES256 (JWT_PUBLIC_KEY); claims sub, \
                         isSupreme, campaigns {id: [\"REPORT\"]}",
                    ))
                    .build(),
            ),
        );
    }
}

/// The errors every route can answer, declared once: the framework's 405
/// and 408, the 500 of a failure, and the 401 of a route behind the bearer
/// token; and those every route of a tag answers (a route that says more
/// of one keeps its own row).
struct CommonErrors;

const EVERY_ROUTE: [(&str, &str); 3] = [
    ("405", "Method not allowed"),
    ("408", "Request timed out"),
    ("500", "Internal error"),
];

const BY_TAG: [(&str, &str, &str); 2] = [
    ("exports", "403", "No REPORT permission on the campaign"),
    ("dev", "404", "DEV_ROUTES is not true"),
];

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name(
                            ErrorBody::name(),
                        )))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let ops = [&mut item.get, &mut item.post, &mut item.delete];
            for op in ops.into_iter().flatten() {
                // A route behind the bearer token answers 401 without one.
                let token = op
                    .security
                    .as_ref()
                    .is_some_and(|s| !s.is_empty())
                    .then_some(("401", "Missing, malformed, expired or badly signed token"));
                let tags = op.tags.clone().unwrap_or_default();
                let tagged = BY_TAG
                    .iter()
                    .filter(|(tag, ..)| tags.iter().any(|t| t == tag))
                    .map(|&(_, status, description)| (status, description));
                for (status, description) in EVERY_ROUTE.into_iter().chain(token).chain(tagged) {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

/// A valid `exportType`: the registry's names.
#[derive(Serialize)]
pub struct ExportTypeName(String);

impl PartialSchema for ExportTypeName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Registry::new().names()))
            .description(Some("An export type known to this service"))
            .into()
    }
}

impl ToSchema for ExportTypeName {}

/// List sort fields.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // variants are described, never built
pub enum SortField {
    #[serde(rename = "date.created")]
    Created,
    #[serde(rename = "date.finished")]
    Finished,
    #[serde(rename = "status")]
    Status,
    #[serde(rename = "exportType")]
    ExportType,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // variants are described, never built
pub enum SortOrder {
    Asc,
    Desc,
}

/// POST body. Unknown fields are ignored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateExportBody {
    export_type: ExportTypeName,
    /// Required (all digits) for codeWaves.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, max_length = 64)]
    date_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, default = false)]
    include_all_markets: Option<bool>,
    /// gzip for single-file CSV types only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, default = "none")]
    compression: Option<Compression>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(dev_routes: bool) -> serde_json::Value {
        Document::new(super::super::api(dev_routes).split_for_parts().1).value()
    }

    fn operations(doc: &serde_json::Value) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn documents_the_routes_that_are_mounted() {
        let with_dev = operations(&doc(true));
        let without = operations(&doc(false));
        assert_eq!(with_dev.len(), 14, "{with_dev:?}");
        // The development routes are documented only where they are served.
        assert!(without.iter().all(|(_, p)| !p.starts_with("/dev/")));
        assert_eq!(without.len(), 10, "{without:?}");
    }

    #[test]
    fn protected_routes_need_a_bearer_token_and_every_error_is_the_shape() {
        let doc = doc(true);
        let public = [
            "/heartbeat",
            "/ready",
            "/metrics",
            "/openapi.json",
            "/dev/token",
        ];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let secured = op.get("security").is_some();
                assert_eq!(secured, !public.contains(&path.as_str()), "{method} {path}");
                let responses = op["responses"].as_object().unwrap();
                for shared in ["405", "408", "500"] {
                    assert!(responses.contains_key(shared), "{method} {path} {shared}");
                }
                for (status, resp) in responses {
                    if status.as_str() >= "400" {
                        assert_eq!(
                            resp["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        let types = &doc["components"]["schemas"]["ExportTypeName"]["enum"];
        assert_eq!(
            types.as_array().unwrap().len(),
            Registry::new().names().len()
        );
    }

    /// Schemas are collected from the handlers' bodies: a type reached
    /// only another way (a query parameter) must be listed by hand, or
    /// its reference dangles.
    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| match v {
                    serde_json::Value::String(r) if k == "$ref" => out.push(r),
                    v => refs(v, out),
                }),
                serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        for dev_routes in [true, false] {
            let doc = doc(dev_routes);
            let mut found = Vec::new();
            refs(&doc, &mut found);
            assert!(found.len() > 20, "{found:?}");
            for r in found {
                let name = r.strip_prefix("#/components/schemas/").expect(r);
                assert!(doc["components"]["schemas"].get(name).is_some(), "{r}");
            }
        }
    }
}
