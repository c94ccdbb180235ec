//! Helpers that write one metric family through `prometheus-client`'s collector API, for
//! figures read at scrape time (the values live elsewhere: journal, atomics, RocketMQ).

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};

type Result = std::result::Result<(), std::fmt::Error>;

/// A counter without labels (`_total` is appended by the encoder).
pub fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result {
    let m = ConstCounter::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

/// A counter in floating point (seconds).
pub fn counter_f64(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result {
    let m = ConstCounter::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

/// A gauge without labels.
pub fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result {
    let m = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

/// A gauge in floating point (seconds, ratios).
pub fn gauge_f64(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result {
    let m = ConstGauge::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

/// A counter family: one series per label set.
pub fn counter_family<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> Result {
    family(e, name, help, ConstCounter::<u64>::TYPE, series, |m, v| {
        ConstCounter::new(v).encode(m)
    })
}

/// A gauge family: one series per label set.
pub fn gauge_family<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> Result {
    family(e, name, help, ConstGauge::<i64>::TYPE, series, |m, v| {
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)
    })
}

fn family<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: &[(L, u64)],
    one: impl Fn(prometheus_client::encoding::MetricEncoder, u64) -> Result,
) -> Result {
    let mut m = e.encode_descriptor(name, help, None, metric_type)?;
    for (labels, v) in series {
        one(m.encode_family(labels)?, *v)?;
    }
    Ok(())
}
