//! Queue backlog metrics to CloudWatch, so the Auto Scaling Group can scale
//! on work waiting rather than on CPU. One batched `PutMetricData` per
//! interval; failures are logged and counted, never fatal.

use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use tokio::sync::watch;

use super::{Metrics, QueueReading};
use crate::shutdown::Shutdown;

/// Metric names (spec: exports.md "Metric names").
pub const BACKLOG: &str = "ExportBacklog";
pub const IN_FLIGHT: &str = "ExportsInFlight";
/// Seconds the oldest PENDING export has waited (the backlog-age alarm).
pub const BACKLOG_AGE: &str = "ExportBacklogAge";
pub const DIMENSION: &str = "AutoScalingGroupName";

pub struct Publisher {
    pub client: aws_sdk_cloudwatch::Client,
    pub namespace: String,
    /// `AutoScalingGroupName`; from config, else the instance's ASG tag.
    pub asg_name: Option<String>,
    pub every: Duration,
    /// The server's queue readings (None until the first).
    pub readings: watch::Receiver<Option<QueueReading>>,
    pub metrics: Metrics,
}

impl Publisher {
    /// Publish now, then every interval, until shutdown.
    pub async fn run(mut self, shutdown: Shutdown) {
        if self.asg_name.is_none() {
            self.asg_name = asg_from_instance_metadata().await;
            if self.asg_name.is_none() {
                tracing::warn!("CloudWatch metrics without the AutoScalingGroupName dimension: set ASG_NAME (instance metadata tags unavailable)");
            }
        }
        // The first reading, then the latest one every interval.
        tokio::select! {
            _ = self.readings.wait_for(Option::is_some) => {},
            _ = shutdown.draining() => return,
        }
        loop {
            let reading = *self.readings.borrow();
            if let Some(r) = reading {
                if let Err(e) = self.publish_once(&r).await {
                    self.metrics.cloudwatch_failures.inc();
                    tracing::warn!(error = %e, "CloudWatch PutMetricData failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {},
                _ = shutdown.draining() => return,
            }
        }
    }

    /// Queue-wide PENDING (backlog) and TRIGGERED (in flight) counts and the
    /// oldest PENDING export's age: every instance reports the same queue,
    /// so the alarms use Maximum.
    pub async fn publish_once(&self, r: &QueueReading) -> anyhow::Result<()> {
        let dims: Vec<Dimension> = self
            .asg_name
            .iter()
            .map(|n| Dimension::builder().name(DIMENSION).value(n).build())
            .collect();
        let datum = |name: &str, v: i64, unit: StandardUnit| {
            MetricDatum::builder()
                .metric_name(name)
                .unit(unit)
                .value(v as f64)
                .set_dimensions(Some(dims.clone()))
                .build()
        };
        self.client
            .put_metric_data()
            .namespace(&self.namespace)
            .metric_data(datum(BACKLOG, r.pending, StandardUnit::Count))
            .metric_data(datum(IN_FLIGHT, r.in_flight, StandardUnit::Count))
            .metric_data(datum(
                BACKLOG_AGE,
                r.oldest_pending_age,
                StandardUnit::Seconds,
            ))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(())
    }
}

/// The ASG name from the instance's tags (IMDSv2; needs instance metadata
/// tags enabled). `None` off EC2 or when tags are not exposed.
async fn asg_from_instance_metadata() -> Option<String> {
    let client = aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_millis(500))
        .max_attempts(1)
        .build();
    let fetch = client.get("/latest/meta-data/tags/instance/aws:autoscaling:groupName");
    match tokio::time::timeout(Duration::from_secs(2), fetch).await {
        Ok(Ok(v)) => Some(v.as_ref().to_string()).filter(|s| !s.is_empty()),
        _ => None,
    }
}
