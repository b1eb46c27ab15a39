//! The tests' HTTP proxy in front of the AWS endpoint: it records requests
//! or answers chosen ones with a chosen error (fault injection), and
//! forwards everything else.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::IntoResponse;

/// Which requests a rule catches: (path and query, body).
pub type Matcher = fn(&str, &[u8]) -> bool;

/// Answer requests matching `when` with `status` and `body` (XML).
#[derive(Clone, Copy)]
pub struct Rule {
    pub when: Matcher,
    pub status: u16,
    pub body: &'static str,
}

/// An STS `AssumeRole` call (query protocol: the action is in the form
/// body, or in the query string for a GET).
pub fn is_assume_role(pq: &str, body: &[u8]) -> bool {
    let needle = b"Action=AssumeRole";
    pq.contains("Action=AssumeRole") || body.windows(needle.len()).any(|w| w == needle)
}

/// STS's answer to a principal not allowed to assume the role. It names
/// no role on purpose: naming it is the service's job.
pub const STS_ACCESS_DENIED: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not authorized to perform sts:AssumeRole (injected)</Message></Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"#;

/// The AssumeRole-denied rule.
pub const DENY_ASSUME_ROLE: Rule = Rule {
    when: is_assume_role,
    status: 403,
    body: STS_ACCESS_DENIED,
};

/// S3's answer to a request it failed on its side (the SDK retries it).
pub const S3_INTERNAL_ERROR: &str =
    "<Error><Code>InternalError</Code><Message>injected</Message></Error>";

/// The AWS endpoint to put a proxy in front of: the stand-in, or an
/// `AWS_ENDPOINT_URL` over plain HTTP (the proxy forwards with a test
/// client that has no TLS). `None` with real AWS or an https endpoint: the
/// tests that need a proxy say so and skip.
pub fn proxy_upstream() -> Option<String> {
    super::standins()
        .aws_endpoint
        .clone()
        .filter(|e| e.starts_with("http://"))
}

/// A request as the proxy's hook sees it.
pub struct Request<'a> {
    pub method: &'a Method,
    /// Path and query string.
    pub pq: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// An answer the hook gives in place of the upstream: (status, XML body).
pub type Answer = (u16, &'static str);

/// Start the proxy in front of `upstream` answering requests that match a
/// rule with the first matching rule's error; returns its base URL.
pub async fn proxy(upstream: String, rules: Vec<Rule>) -> String {
    forward(upstream, move |r| {
        rules
            .iter()
            .find(|rule| (rule.when)(r.pq, r.body))
            .map(|rule| (rule.status, rule.body))
    })
    .await
}

/// The one forwarding proxy of the tests: `hook` sees every request first
/// (to record it, or to answer it itself); what it does not answer is
/// forwarded unchanged. Returns the proxy's base URL.
pub async fn forward<F>(upstream: String, hook: F) -> String
where
    F: Fn(&Request<'_>) -> Option<Answer> + Send + Sync + 'static,
{
    let hook = std::sync::Arc::new(hook);
    let client = reqwest::Client::new();
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (client, upstream, hook) = (client.clone(), upstream.clone(), hook.clone());
        async move {
            let pq = uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string();
            let seen = Request {
                method: &method,
                pq: &pq,
                headers: &headers,
                body: &body,
            };
            if let Some((status, answer)) = hook(&seen) {
                let mut h = HeaderMap::new();
                h.insert("content-type", HeaderValue::from_static("text/xml"));
                let status = StatusCode::from_u16(status).unwrap();
                return (status, h, answer).into_response();
            }
            let mut req = client.request(method, format!("{upstream}{pq}")).body(body);
            for (k, v) in headers.iter() {
                if k != "host" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            let res = req.send().await.unwrap();
            let status = res.status();
            let mut out = HeaderMap::new();
            for (k, v) in res.headers() {
                if k != "content-length" && k != "transfer-encoding" {
                    out.insert(k, v.clone());
                }
            }
            let body = res.bytes().await.unwrap();
            (status, out, body).into_response()
        }
    };
    // Parts of 5 MiB and more pass through: no body limit (axum's is 2 MB).
    let app = axum::Router::new()
        .fallback(handler)
        .layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://127.0.0.1:{port}")
}
