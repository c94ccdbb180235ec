//! The task that runs one sensor: open, sample every `interval_ms`, publish; on a
//! fault count it, log it, publish a status message, drop the device and open it again
//! after an exponential backoff. It never returns an error: a sensor cannot stop the
//! agent. It ends when the agent's cancellation token fires.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mqtt::packet::{Message, MessageProperties, QoS};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::backoff::Backoff;
use super::config::SensorConfig;
use super::reading::{Reading, Status, Value};
use super::sampler::{Opener, Sampler};
use super::stats::{Counters, SensorState};
use crate::broker::{LocalBroker, now_ms};
use crate::error::Error;
use crate::fault_kind::FaultKind;

/// One running sensor.
pub(crate) struct SensorTask {
    pub(crate) cfg: SensorConfig,
    pub(crate) broker: LocalBroker,
    pub(crate) counters: Arc<Counters>,
    pub(crate) opener: Opener,
    pub(crate) tracker: TaskTracker,
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// Sleeps `d`; `true` if cancelled first.
async fn cancelled_during(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

impl SensorTask {
    fn publisher(&self) -> String {
        format!("edge-agent/sensor/{}", self.cfg.id)
    }

    fn message(&self, topic: String, payload: Vec<u8>, retain: bool) -> Message {
        Message {
            topic,
            payload: Bytes::from(payload),
            qos: qos(self.cfg.qos),
            retain,
            properties: MessageProperties {
                payload_format_indicator: Some(1),
                content_type: Some("application/json".to_owned()),
                ..MessageProperties::default()
            },
        }
    }

    /// Publishes through the local broker (journaled when the topic is an uplink
    /// topic); a refusal is counted as a `publish` fault. Returns whether it went.
    async fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> bool {
        let m = self.message(topic, payload, retain);
        match self.broker.publish(&self.publisher(), m, true).await {
            Ok(_) => true,
            Err(refusal) => {
                let text = format!("local broker refused a message: {refusal}");
                self.counters.fault(FaultKind::Publish, &text);
                warn!(sensor = %self.cfg.id, error = %text, "sensor reading not published");
                false
            }
        }
    }

    async fn publish_values(&self, values: &[Value], seq: u64) {
        let ts = now_ms();
        for v in values {
            let r = Reading::of(&self.cfg.id, v, ts, seq);
            match serde_json::to_vec(&r) {
                Ok(payload) => {
                    if self.publish(self.cfg.topic.clone(), payload, false).await {
                        self.counters.published(1);
                    }
                }
                Err(e) => self.counters.fault(FaultKind::Other, &e.to_string()),
            }
        }
    }

    async fn publish_status(&self, status: &Status<'_>) {
        if let Ok(payload) = serde_json::to_vec(status)
            && self.publish(self.cfg.status_topic(), payload, true).await
        {
            self.counters.status_published();
        }
    }

    /// Counts, logs and publishes a fault; the caller then waits `retry`.
    async fn fault(&self, e: &Error, attempts: u64, retry: Duration) {
        let (kind, text) = match e {
            Error::Sensor { kind, message } => (*kind, message.clone()),
            other => (FaultKind::Other, other.to_string()),
        };
        self.counters.fault(kind, &text);
        self.counters.set_state(SensorState::Failing);
        let retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
        warn!(sensor = %self.cfg.id, %kind, error = %text, attempts, retry_in_ms = retry_ms, "sensor fault");
        self.publish_status(&Status {
            sensor: &self.cfg.id,
            state: SensorState::Failing.as_str(),
            ts_ms: now_ms(),
            kind: Some(kind.as_str()),
            error: Some(&text),
            attempts: Some(attempts),
            retry_in_ms: Some(retry_ms),
        })
        .await;
    }

    async fn recovered(&self) {
        if self.counters.state() == SensorState::Ok {
            return;
        }
        self.counters.set_state(SensorState::Ok);
        info!(sensor = %self.cfg.id, kind = %self.cfg.kind, "sensor ok");
        self.publish_status(&Status {
            sensor: &self.cfg.id,
            state: SensorState::Ok.as_str(),
            ts_ms: now_ms(),
            kind: None,
            error: None,
            attempts: None,
            retry_in_ms: None,
        })
        .await;
    }

    async fn open(&self) -> Result<Box<dyn Sampler>, Error> {
        let opener = self.opener.clone();
        self.tracker
            .spawn_blocking(move || opener())
            .await
            .map_err(|e| Error::Internal(format!("sensor open task failed: {e}")))?
    }

    async fn sample(
        &self,
        mut dev: Box<dyn Sampler>,
    ) -> (Option<Box<dyn Sampler>>, Result<Vec<Value>, Error>) {
        if dev.is_quick() {
            let r = dev.sample();
            return (Some(dev), r);
        }
        match self
            .tracker
            .spawn_blocking(move || {
                let r = dev.sample();
                (dev, r)
            })
            .await
        {
            Ok((dev, r)) => (Some(dev), r),
            Err(e) => (
                None,
                Err(Error::Internal(format!("sensor read task failed: {e}"))),
            ),
        }
    }

    /// Runs until `cancel` fires.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let interval = Duration::from_millis(self.cfg.interval_ms());
        let mut backoff = Backoff::new(
            Duration::from_millis(self.cfg.retry_initial_ms),
            Duration::from_millis(self.cfg.retry_max_ms),
        );
        let mut attempts = 0u64;
        let mut seq = 0u64;
        loop {
            let opened = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.open() => r,
            };
            let mut dev = match opened {
                Ok(dev) => Some(dev),
                Err(e) => {
                    attempts += 1;
                    let retry = backoff.next_delay();
                    self.fault(&e, attempts, retry).await;
                    if cancelled_during(&cancel, retry).await {
                        return;
                    }
                    continue;
                }
            };
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            while let Some(d) = dev.take() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (back, result) = self.sample(d).await;
                match result {
                    Ok(values) => {
                        attempts = 0;
                        backoff.reset();
                        self.recovered().await;
                        if !values.is_empty() {
                            seq += 1;
                            self.publish_values(&values, seq).await;
                        }
                        dev = back;
                    }
                    Err(e) => {
                        // The device is dropped (closed) and opened anew after the wait:
                        // a chip that reset has lost its configuration.
                        drop(back);
                        attempts += 1;
                        let retry = backoff.next_delay();
                        self.fault(&e, attempts, retry).await;
                        if cancelled_during(&cancel, retry).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}
