//! `[[sensor]]` tables: what each sensor reads, where it publishes, and the checks
//! `edge-agent validate` runs on them.
//!
//! One flat table per sensor. `type` says which device it is; the keys that locate the
//! device depend on the type, and a key that does not apply to the type is refused (as
//! unknown keys are everywhere else in the config):
//!
//! | type        | device keys                                          |
//! |-------------|------------------------------------------------------|
//! | `bme280`    | `bus = "/dev/i2c-N"`, `address = 0x76` or `0x77`     |
//! | `mcp3008`   | `device = "/dev/spidevB.C"`, `channels`, `vref`, `spi_hz` |
//! | `digital`   | `chip = "/dev/gpiochipN"`, `line`, `active_low`, `debounce_ms` |
//! | `simulated` | `quantity`, `period_secs`                            |
//!
//! Every type has `id`, `topic`, `qos`, `interval_ms`, `status_topic` and the retry
//! backoff (`retry_initial_ms`, `retry_max_ms`). `type` and `bus` are plain strings
//! here and checked in [`SensorConfig::check`], so that an unknown one is refused with
//! a message naming the sensor instead of a bare parser error.

use serde::Deserialize;

use crate::error::{Error, Result};

/// The I2C addresses a BME280 can have (SDO pin low / high).
pub const BME280_ADDRESSES: [u16; 2] = [0x76, 0x77];

/// One `[[sensor]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Unique name of the sensor; it is the `sensor` field of its readings.
    pub id: String,
    /// `bme280`, `mcp3008`, `digital` or `simulated` (see [`SensorKind`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// Topic the readings are published to (no wildcards).
    pub topic: String,
    /// Topic of the status messages (faults, recovery); default `{topic}/status`.
    #[serde(default)]
    pub status_topic: Option<String>,
    /// QoS of the readings and status messages: 0, 1 or 2.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Time between two samples, ms (digital: the polling period). Default 10000
    /// (digital: 10).
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// First retry delay after a hardware fault, ms; doubled per failed attempt.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Upper bound of the retry delay, ms.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,

    /// bme280: the I2C bus device, `/dev/i2c-N`.
    #[serde(default)]
    pub bus: Option<String>,
    /// bme280: the 7-bit I2C address, 0x76 or 0x77.
    #[serde(default)]
    pub address: Option<u16>,

    /// mcp3008: the SPI device, `/dev/spidevB.C` (bus B, chip select C).
    #[serde(default)]
    pub device: Option<String>,
    /// mcp3008: single-ended input channels to read, 0..=7 (default `[0]`).
    #[serde(default)]
    pub channels: Option<Vec<u8>>,
    /// mcp3008: reference voltage in volts (default 3.3).
    #[serde(default)]
    pub vref: Option<f64>,
    /// mcp3008: SPI clock, Hz (default 1 MHz; the chip allows 1.35 MHz at 2.7 V).
    #[serde(default)]
    pub spi_hz: Option<u32>,

    /// digital: the GPIO character device, `/dev/gpiochipN`.
    #[serde(default)]
    pub chip: Option<String>,
    /// digital: the line offset on that chip.
    #[serde(default)]
    pub line: Option<u32>,
    /// digital: the input reads 1 when the line is low.
    #[serde(default)]
    pub active_low: Option<bool>,
    /// digital: a new level counts once it has been stable this long, ms (default 50).
    #[serde(default)]
    pub debounce_ms: Option<u64>,

    /// simulated: `temperature`, `humidity`, `pressure` or `voltage` (default
    /// temperature).
    #[serde(default)]
    pub quantity: Option<String>,
    /// simulated: period of the sine the values follow, seconds (default 600).
    #[serde(default)]
    pub period_secs: Option<u64>,
}

fn default_qos() -> u8 {
    1
}
fn default_retry_initial_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    60_000
}

/// The sensor types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorKind {
    /// Bosch BME280 over I2C: temperature, humidity, pressure.
    Bme280,
    /// Microchip MCP3008 10-bit ADC over SPI: voltages.
    Mcp3008,
    /// A GPIO input line, published on change after debouncing.
    Digital,
    /// Generated values, for machines without hardware.
    Simulated,
}

impl SensorKind {
    /// Every type, as written in the config.
    pub const ALL: [SensorKind; 4] = [Self::Bme280, Self::Mcp3008, Self::Digital, Self::Simulated];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bme280 => "bme280",
            Self::Mcp3008 => "mcp3008",
            Self::Digital => "digital",
            Self::Simulated => "simulated",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The device keys this type accepts (besides the common ones).
    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Bme280 => &["bus", "address"],
            Self::Mcp3008 => &["device", "channels", "vref", "spi_hz"],
            Self::Digital => &["chip", "line", "active_low", "debounce_ms"],
            Self::Simulated => &["quantity", "period_secs"],
        }
    }
}

/// What a simulated sensor produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimQuantity {
    /// °C around 21.
    Temperature,
    /// % relative humidity around 45.
    Humidity,
    /// hPa around 1013.
    Pressure,
    /// V around 1.65.
    Voltage,
}

impl SimQuantity {
    const ALL: [SimQuantity; 4] = [
        Self::Temperature,
        Self::Humidity,
        Self::Pressure,
        Self::Voltage,
    ];

    /// The config spelling, also the `quantity` field of its readings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Temperature => "temperature",
            Self::Humidity => "humidity",
            Self::Pressure => "pressure",
            Self::Voltage => "voltage",
        }
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_numbered(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(digits)
}

fn is_spidev(path: &str) -> bool {
    path.strip_prefix("/dev/spidev")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(bus, cs)| digits(bus) && digits(cs))
}

impl SensorConfig {
    /// The sensor's type; `check` has refused unknown ones.
    pub fn sensor_kind(&self) -> Option<SensorKind> {
        SensorKind::parse(&self.kind)
    }

    /// The status topic: `status_topic`, else `{topic}/status`.
    pub fn status_topic(&self) -> String {
        self.status_topic
            .clone()
            .unwrap_or_else(|| format!("{}/status", self.topic))
    }

    /// The sampling (digital: polling) period, ms.
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms.unwrap_or(match self.sensor_kind() {
            Some(SensorKind::Digital) => 10,
            _ => 10_000,
        })
    }

    /// The simulated quantity (default temperature).
    pub fn sim_quantity(&self) -> Option<SimQuantity> {
        match &self.quantity {
            None => Some(SimQuantity::Temperature),
            Some(q) => SimQuantity::ALL.into_iter().find(|k| k.as_str() == q),
        }
    }

    /// The MCP3008 channels (default `[0]`).
    pub fn channels(&self) -> Vec<u8> {
        self.channels.clone().unwrap_or_else(|| vec![0])
    }

    /// Which device keys are set, by name.
    fn device_keys_set(&self) -> Vec<&'static str> {
        [
            ("bus", self.bus.is_some()),
            ("address", self.address.is_some()),
            ("device", self.device.is_some()),
            ("channels", self.channels.is_some()),
            ("vref", self.vref.is_some()),
            ("spi_hz", self.spi_hz.is_some()),
            ("chip", self.chip.is_some()),
            ("line", self.line.is_some()),
            ("active_low", self.active_low.is_some()),
            ("debounce_ms", self.debounce_ms.is_some()),
            ("quantity", self.quantity.is_some()),
            ("period_secs", self.period_secs.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }

    /// Checks one sensor; `index` is its position among the `[[sensor]]` tables.
    /// Errors name the sensor (`sensor[2] "bme280-1".address`) and say what is wrong.
    pub fn check(&self, index: usize) -> Result<()> {
        let name = format!("sensor[{index}] {:?}", self.id);
        let bad = |key: &str, reason: String| Error::Config {
            field: format!("{name}.{key}"),
            reason,
        };
        if self.id.is_empty()
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad(
                "id",
                "must be non-empty and only letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let names: Vec<&str> = SensorKind::ALL.iter().map(|k| k.as_str()).collect();
        let kind = SensorKind::parse(&self.kind).ok_or_else(|| {
            bad(
                "type",
                format!("unknown type {:?}; one of {}", self.kind, names.join(", ")),
            )
        })?;
        for key in self.device_keys_set() {
            if !kind.keys().contains(&key) {
                return Err(bad(
                    key,
                    format!("does not apply to a {} sensor", kind.as_str()),
                ));
            }
        }
        for (key, topic) in [
            ("topic", Some(self.topic.clone())),
            ("status_topic", self.status_topic.clone()),
        ] {
            let Some(topic) = topic else { continue };
            mqtt::topic::validate_name(&topic).map_err(|e| bad(key, format!("{topic:?}: {e}")))?;
            if topic.starts_with('$') {
                return Err(bad(
                    key,
                    format!("{topic:?}: topics starting with '$' are reserved"),
                ));
            }
        }
        if self.status_topic() == self.topic {
            return Err(bad("status_topic", "must differ from topic".into()));
        }
        if self.qos > 2 {
            return Err(bad("qos", format!("{} is not 0, 1 or 2", self.qos)));
        }
        let interval = self.interval_ms();
        if interval == 0 || interval > 86_400_000 {
            return Err(bad(
                "interval_ms",
                format!("{interval}: must be 1..=86400000"),
            ));
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err(bad(
                "retry_initial_ms",
                "must be > 0 and not above retry_max_ms".into(),
            ));
        }
        match kind {
            SensorKind::Bme280 => self.check_bme280(&bad),
            SensorKind::Mcp3008 => self.check_mcp3008(&bad),
            SensorKind::Digital => self.check_digital(&bad),
            SensorKind::Simulated => self.check_simulated(&bad),
        }
    }

    fn check_bme280(&self, bad: &dyn Fn(&str, String) -> Error) -> Result<()> {
        let bus = self
            .bus
            .as_deref()
            .ok_or_else(|| bad("bus", "missing: the I2C bus, \"/dev/i2c-N\"".into()))?;
        if !is_numbered(bus, "/dev/i2c-") {
            return Err(bad(
                "bus",
                format!("unknown bus {bus:?}: expected \"/dev/i2c-N\""),
            ));
        }
        let address = self
            .address
            .ok_or_else(|| bad("address", "missing: 0x76 or 0x77".into()))?;
        if address > 0x7F {
            return Err(bad(
                "address",
                format!("{address:#x} is not a 7-bit I2C address (0x00..=0x7f)"),
            ));
        }
        if !BME280_ADDRESSES.contains(&address) {
            return Err(bad(
                "address",
                format!("{address:#x}: a BME280 answers only at 0x76 or 0x77"),
            ));
        }
        Ok(())
    }

    fn check_mcp3008(&self, bad: &dyn Fn(&str, String) -> Error) -> Result<()> {
        let device = self.device.as_deref().ok_or_else(|| {
            bad(
                "device",
                "missing: the SPI device, \"/dev/spidevB.C\"".into(),
            )
        })?;
        if !is_spidev(device) {
            return Err(bad(
                "device",
                format!("{device:?}: expected \"/dev/spidevB.C\" (bus B, chip select C)"),
            ));
        }
        let channels = self.channels();
        if channels.is_empty() {
            return Err(bad("channels", "at least one channel (0..=7)".into()));
        }
        for (i, c) in channels.iter().enumerate() {
            if *c > 7 {
                return Err(bad(
                    "channels",
                    format!("{c}: the MCP3008 has channels 0..=7"),
                ));
            }
            if channels[..i].contains(c) {
                return Err(bad("channels", format!("channel {c} listed twice")));
            }
        }
        if let Some(v) = self.vref
            && !(v > 0.0 && v <= 5.5)
        {
            return Err(bad("vref", format!("{v}: must be > 0 and <= 5.5 V")));
        }
        if let Some(hz) = self.spi_hz
            && !(10_000..=3_600_000).contains(&hz)
        {
            return Err(bad("spi_hz", format!("{hz}: must be 10000..=3600000")));
        }
        Ok(())
    }

    fn check_digital(&self, bad: &dyn Fn(&str, String) -> Error) -> Result<()> {
        let chip = self
            .chip
            .as_deref()
            .ok_or_else(|| bad("chip", "missing: the GPIO chip, \"/dev/gpiochipN\"".into()))?;
        if !is_numbered(chip, "/dev/gpiochip") {
            return Err(bad(
                "chip",
                format!("{chip:?}: expected \"/dev/gpiochipN\""),
            ));
        }
        if self.line.is_none() {
            return Err(bad("line", "missing: the line offset on the chip".into()));
        }
        if let Some(d) = self.debounce_ms
            && d > 60_000
        {
            return Err(bad("debounce_ms", format!("{d}: at most 60000")));
        }
        Ok(())
    }

    fn check_simulated(&self, bad: &dyn Fn(&str, String) -> Error) -> Result<()> {
        if self.sim_quantity().is_none() {
            let names: Vec<&str> = SimQuantity::ALL.iter().map(|q| q.as_str()).collect();
            return Err(bad(
                "quantity",
                format!(
                    "unknown quantity {:?}; one of {}",
                    self.quantity.as_deref().unwrap_or_default(),
                    names.join(", ")
                ),
            ));
        }
        if self.period_secs == Some(0) {
            return Err(bad("period_secs", "must be greater than 0".into()));
        }
        Ok(())
    }
}

/// Checks every sensor and that no id is used twice.
pub fn check_all(sensors: &[SensorConfig]) -> Result<()> {
    for (i, s) in sensors.iter().enumerate() {
        s.check(i)?;
        if let Some(j) = sensors[..i].iter().position(|o| o.id == s.id) {
            return Err(Error::Config {
                field: format!("sensor[{i}] {:?}.id", s.id),
                reason: format!("used twice (also sensor[{j}])"),
            });
        }
    }
    Ok(())
}
