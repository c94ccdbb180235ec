//! Sensors attached to the gateway, published to the local broker.
//!
//! Each `[[sensor]]` of the config (see [`config`]) runs as one task in the agent's
//! `TaskTracker`, stopped by its cancellation token. Drivers are written against the
//! embedded-hal 1.0 traits and opened through linux-embedded-hal ([`linux`]):
//!
//! | type        | device                          | driver                                   |
//! |-------------|---------------------------------|------------------------------------------|
//! | `bme280`    | `/dev/i2c-N`, address 0x76/0x77 | the `bme280` crate, wrapped ([`bme280`])  |
//! | `mcp3008`   | `/dev/spidevB.C`                | own, 3-byte frames ([`mcp3008`]: no crate for embedded-hal 1.0) |
//! | `digital`   | a line of `/dev/gpiochipN`      | own debouncer over `InputPin` ([`digital`]) |
//! | `simulated` | none                            | sine + noise ([`simulated`])              |
//!
//! # Readings: one message per value
//! Every value is one MQTT message on the sensor's `topic`, JSON (UTF-8, content type
//! `application/json`, not retained, the sensor's `qos`):
//!
//! ```json
//! {"sensor":"bme280-1","quantity":"temperature","value":21.53,"unit":"°C","ts_ms":1764100000000,"seq":42}
//! ```
//!
//! | field      | type    | meaning                                                    |
//! |------------|---------|------------------------------------------------------------|
//! | `sensor`   | string  | the sensor's `id`                                          |
//! | `quantity` | string  | `temperature`, `humidity`, `pressure`, `voltage`, `input`  |
//! | `value`    | number  | the value, rounded to the sensor's resolution              |
//! | `unit`     | string  | `°C`, `%` (relative humidity), `hPa`, `V`, `""` (input 0/1) |
//! | `ts_ms`    | integer | sampling time, ms since the Unix epoch (gateway clock)     |
//! | `seq`      | integer | sample number since start; the values of one sample share it and `ts_ms` |
//! | `channel`  | integer | only for multi-channel devices (MCP3008 input 0..=7)       |
//! | `raw`      | integer | only for ADCs: the converter's count (MCP3008 0..=1023)    |
//!
//! A BME280 sample is therefore three messages (temperature, humidity, pressure) with
//! the same `seq` and `ts_ms`. One message per value rather than one per sample
//! because every sensor type then has the same flat shape, which a consumer (the cloud
//! side's stores, a dashboard, `jq`) handles without knowing the device; each value
//! carries its own unit; and a device that lacks a quantity (a BMP280 has no humidity)
//! simply sends fewer messages. The cost, three journal entries instead of one per
//! BME280 sample, is nothing at sensor rates (the journal batches commits); `seq` and
//! `ts_ms` keep the grouping for whoever needs a whole sample.
//!
//! # Faults and the status topic
//! A fault (missing device file, permission, I2C NACK, bus error, wrong chip, invalid
//! data) is counted by kind (see [`Sensors::stats`]), logged as a warning, and published
//! on the sensor's `status_topic` (default `{topic}/status`), retained, so a late
//! subscriber sees the current state:
//!
//! ```json
//! {"sensor":"bme280-1","state":"failing","ts_ms":1764100000000,"kind":"missing_device","error":"cannot open /dev/i2c-99: No such file or directory (os error 2)","attempts":3,"retry_in_ms":4000}
//! {"sensor":"bme280-1","state":"ok","ts_ms":1764100004100}
//! ```
//!
//! `state` is `failing` after each failed attempt (with the fault's `kind`, `error`
//! text, consecutive `attempts` and the wait before the next one) and `ok` once, when
//! a sample succeeds after start or after a fault. The device is then closed and opened
//! again after an exponential backoff (`retry_initial_ms`, doubling, capped at
//! `retry_max_ms`; defaults 1 s and 60 s). A sensor that cannot be opened at start is
//! retried the same way: it never stops the agent from starting or serving.
//!
//! Readings and status messages go through [`LocalBroker::publish`] with
//! `journal = true`, so they reach the cloud when their topic matches `[uplink]
//! topics`, exactly like a device's publish. A refused publish (journal full) is counted
//! as kind `publish`.
//!
//! # Counters
//! [`Sensors::stats`] copies every sensor's counters (readings published, faults by
//! kind, state, last error): the metrics exporter turns them into
//! `sensor_errors_total{sensor,kind}` and friends.

pub mod backoff;
pub mod bme280;
pub mod config;
pub mod digital;
pub mod linux;
pub mod mcp3008;
pub mod reading;
pub mod sampler;
pub mod simulated;
pub mod stats;
mod task;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use crate::fault_kind::FaultKind;
pub use config::{SensorConfig, SensorKind};
pub use stats::{SensorState, SensorStats};

use crate::broker::LocalBroker;
use stats::Counters;
use task::SensorTask;

/// The running sensors: a cheap handle to their counters. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Sensors {
    counters: Arc<Vec<Arc<Counters>>>,
}

impl Sensors {
    /// Starts one task per (checked) sensor config in `tracker`; they publish through
    /// `broker` and stop when `cancel` fires. Never fails: devices are opened by the
    /// tasks, and retried there.
    pub fn start(
        configs: &[SensorConfig],
        broker: &LocalBroker,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Self {
        Self::start_with(configs, broker, tracker, cancel, linux::opener)
    }

    /// As [`Sensors::start`], with the device opener chosen by `open` (tests inject
    /// mock buses through it).
    pub fn start_with(
        configs: &[SensorConfig],
        broker: &LocalBroker,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
        open: impl Fn(&SensorConfig) -> sampler::Opener,
    ) -> Self {
        let mut counters = Vec::with_capacity(configs.len());
        for cfg in configs {
            let Some(kind) = cfg.sensor_kind() else {
                continue;
            };
            let c = Arc::new(Counters::new(&cfg.id, kind));
            counters.push(c.clone());
            info!(sensor = %cfg.id, kind = %cfg.kind, topic = %cfg.topic, "sensor starting");
            let task = SensorTask {
                cfg: cfg.clone(),
                broker: broker.clone(),
                counters: c,
                opener: open(cfg),
                tracker: tracker.clone(),
            };
            tracker.spawn(task.run(cancel.clone()));
        }
        Self {
            counters: Arc::new(counters),
        }
    }

    /// A copy of every sensor's counters, in config order.
    pub fn stats(&self) -> Vec<SensorStats> {
        self.counters.iter().map(|c| c.snapshot()).collect()
    }

    /// Number of sensors running.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// No sensors configured.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }
}
