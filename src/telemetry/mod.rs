//! Telemetry: JSON log lines (the fields fluentd and Kibana expect) and the
//! Prometheus registry. No globals besides the tracing dispatcher, which the
//! binary installs once; the registry is a value held by the app state.

pub mod cloudwatch;

use std::collections::BTreeMap;
use std::io::Write;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

pub const PRODUCT_CODE: &str = "PRD1541";
pub const SERVICE: &str = "vf-export";

/// The log filter: `RUST_LOG`, else `debug` when the old `DEBUG=titan*`
/// switch is set, else `info`.
pub fn filter_from_env() -> tracing_subscriber::EnvFilter {
    let directive = filter_directive(
        std::env::var("RUST_LOG").ok().as_deref(),
        std::env::var("DEBUG").ok().as_deref(),
    );
    tracing_subscriber::EnvFilter::try_new(&directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// The filter directive from `RUST_LOG` and the old `DEBUG` switch (a
/// comma-separated list of namespaces; any starting with `titan` enables
/// debug, as the Node `debug` module did).
pub fn filter_directive(rust_log: Option<&str>, debug: Option<&str>) -> String {
    if let Some(f) = rust_log.map(str::trim).filter(|f| !f.is_empty()) {
        return f.to_string();
    }
    let titan = debug.is_some_and(|d| d.split(',').any(|p| p.trim().starts_with("titan")));
    if titan {
        // Our crate at debug; chatty dependencies stay at info.
        "info,vf_export=debug".to_string()
    } else {
        "info".to_string()
    }
}

/// Install the JSON log layer on stdout. Called once by the binary.
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let _ = tracing_subscriber::registry()
        .with(filter_from_env())
        .with(JsonLayer::new(std::io::stdout))
        .try_init();
}

/// Span fields, kept as JSON so every event inside the span can carry them
/// (`correlation_id`, `export_id`, ...).
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
}

/// One JSON object per line: `time`, `level` (lower case, as Kibana queries
/// `level:"error"`), `message`, `product_code`, `service`, `target`, the
/// fields of the enclosing spans (outermost first, inner ones win) and the
/// event's own fields.
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut map = Map::new();
        attrs.record(&mut JsonVisitor(&mut map));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(map));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(&mut fields.0));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut out: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut own = Map::new();
        event.record(&mut JsonVisitor(&mut own));
        out.extend(own);
        let meta = event.metadata();
        out.insert(
            "time".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        out.insert(
            "level".into(),
            Value::String(meta.level().as_str().to_ascii_lowercase()),
        );
        out.entry("message".into())
            .or_insert_with(|| Value::String(String::new()));
        out.insert("product_code".into(), PRODUCT_CODE.into());
        out.insert("service".into(), SERVICE.into());
        out.insert("target".into(), meta.target().into());
        let mut line = serde_json::to_vec(&out).unwrap_or_default();
        line.push(b'\n');
        // One write per line so concurrent lines do not interleave.
        let _ = self.make_writer.make_writer().write_all(&line);
    }
}

/// One reading of the queue, taken by the server's sampler (startup.rs)
/// and fed to the gauges and to CloudWatch: telemetry never reads the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueReading {
    /// PENDING exports (the backlog).
    pub pending: i64,
    /// TRIGGERED exports (in flight, on any instance).
    pub in_flight: i64,
    /// Seconds the oldest PENDING export has waited (0: none waits).
    pub oldest_pending_age: i64,
}

/// Prometheus metrics of the service, registered on one registry that the
/// app state owns (no global registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub exports: IntCounterVec,
    pub exports_started: IntCounterVec,
    pub rows_written: IntCounterVec,
    pub bytes_written: IntCounterVec,
    pub export_duration: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub in_flight: IntGauge,
    pub lease_reclaims: IntCounter,
    pub resumed_rows: IntCounter,
    pub cloudwatch_failures: IntCounter,
    pub oldest_pending_age: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route template"),
            &["method", "route", "status"],
        )
        .expect("metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request duration"),
            &["method", "route", "status"],
        )
        .expect("metric");
        let exports = IntCounterVec::new(
            Opts::new("vf_export_exports_total", "Exports by final status"),
            &["export_type", "status"],
        )
        .expect("metric");
        let exports_started = IntCounterVec::new(
            Opts::new(
                "vf_export_exports_started_total",
                "Export attempts started by workers",
            ),
            &["export_type"],
        )
        .expect("metric");
        let rows_written = IntCounterVec::new(
            Opts::new("vf_export_rows_written_total", "Rows written"),
            &["export_type"],
        )
        .expect("metric");
        let bytes_written = IntCounterVec::new(
            Opts::new("vf_export_bytes_written_total", "Bytes uploaded"),
            &["export_type"],
        )
        .expect("metric");
        let export_duration = HistogramVec::new(
            HistogramOpts::new("vf_export_duration_seconds", "Export duration").buckets(vec![
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
            &["export_type"],
        )
        .expect("metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new("vf_export_queue_depth", "Exports in the queue by status"),
            &["status"],
        )
        .expect("metric");
        let in_flight = IntGauge::new("vf_export_in_flight", "Exports running in this process")
            .expect("metric");
        let resumed_rows = IntCounter::new(
            "vf_export_resumed_rows_total",
            "Rows not read again because an export continued from its checkpoint",
        )
        .expect("metric");
        let lease_reclaims = IntCounter::new(
            "vf_export_lease_reclaims_total",
            "Exports claimed again after their lease lapsed",
        )
        .expect("metric");
        let cloudwatch_failures = IntCounter::new(
            "vf_export_cloudwatch_publish_failures_total",
            "Failed CloudWatch PutMetricData calls",
        )
        .expect("metric");
        let oldest_pending_age = IntGauge::new(
            "vf_export_oldest_pending_age_seconds",
            "Seconds the oldest PENDING export has waited since it was created (0: none waits)",
        )
        .expect("metric");
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(exports.clone()),
            Box::new(exports_started.clone()),
            Box::new(rows_written.clone()),
            Box::new(bytes_written.clone()),
            Box::new(export_duration.clone()),
            Box::new(queue_depth.clone()),
            Box::new(in_flight.clone()),
            Box::new(lease_reclaims.clone()),
            Box::new(resumed_rows.clone()),
            Box::new(cloudwatch_failures.clone()),
            Box::new(oldest_pending_age.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(pc));
        }
        Self {
            registry,
            http_requests,
            http_duration,
            exports,
            exports_started,
            rows_written,
            bytes_written,
            export_duration,
            queue_depth,
            in_flight,
            lease_reclaims,
            resumed_rows,
            cloudwatch_failures,
            oldest_pending_age,
        }
    }

    /// Create every per-type series at zero, so they exist from start-up: a
    /// `rate()`/`increase()` over a series misses the increment that creates
    /// it, and an alert that compares with "none finished" needs the series
    /// there before the first export. The queue-depth gauge is left to its
    /// refresh: its `status` series appear with the first real reading.
    /// `final_statuses`: the `status` values of `vf_export_exports_total`.
    pub fn preinit(&self, export_types: &[&str], final_statuses: &[&str]) {
        for ty in export_types {
            for status in final_statuses {
                self.exports.with_label_values(&[ty, status]);
            }
            self.exports_started.with_label_values(&[ty]);
            self.rows_written.with_label_values(&[ty]);
            self.bytes_written.with_label_values(&[ty]);
            self.export_duration.with_label_values(&[ty]);
        }
    }

    /// The queue gauges from a reading (`status` labels: the stored names).
    pub fn observe_queue(&self, r: &QueueReading) {
        self.queue_depth
            .with_label_values(&["PENDING"])
            .set(r.pending);
        self.queue_depth
            .with_label_values(&["TRIGGERED"])
            .set(r.in_flight);
        self.oldest_pending_age.set(r.oldest_pending_age);
    }

    /// Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        let enc = prometheus::TextEncoder::new();
        let _ = enc.encode_utf8(&self.registry.gather(), &mut buf);
        buf
    }

    /// Observe one finished HTTP request.
    pub fn observe_http(&self, method: &str, route: &str, status: u16, secs: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration.with_label_values(&labels).observe(secs);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filter_from_rust_log_and_the_old_debug_switch() {
        assert_eq!(filter_directive(None, None), "info");
        assert_eq!(filter_directive(Some("warn"), Some("titan*")), "warn");
        assert_eq!(
            filter_directive(None, Some("titan*")),
            "info,vf_export=debug"
        );
        assert_eq!(
            filter_directive(None, Some("express,titan:export")),
            "info,vf_export=debug"
        );
        assert_eq!(filter_directive(None, Some("express")), "info");
    }

    #[test]
    fn json_lines_carry_span_fields_and_the_fixed_ones() {
        use tracing_subscriber::prelude::*;
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let make = move || Capture(sink.clone());
        let sub = tracing_subscriber::registry().with(JsonLayer::new(make));
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("export", export_id = "e1", correlation_id = "c1");
            let _g = span.enter();
            tracing::error!(rows = 3u64, "export failed");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["message"], "export failed");
        assert_eq!(v["product_code"], "PRD1541");
        assert_eq!(v["service"], "vf-export");
        assert_eq!(v["export_id"], "e1");
        assert_eq!(v["correlation_id"], "c1");
        assert_eq!(v["rows"], 3);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
