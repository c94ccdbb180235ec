//! The JSON the sensors publish: readings and status messages (the schema is in the
//! `sensors` module doc and in docs/configure-agent.md).

use serde::Serialize;

/// One value of one sample, as a driver returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// What was measured: `temperature`, `humidity`, `pressure`, `voltage`, `input`.
    pub quantity: &'static str,
    /// The value in `unit`, rounded to the sensor's resolution.
    pub value: f64,
    /// `°C`, `%`, `hPa`, `V`, or empty for a dimensionless value (a digital input's
    /// 0/1).
    pub unit: &'static str,
    /// The input channel, for multi-channel devices (MCP3008).
    pub channel: Option<u8>,
    /// The raw converter reading, where there is one (MCP3008 counts 0..=1023).
    pub raw: Option<u32>,
}

impl Value {
    /// A value without channel or raw reading.
    pub fn new(quantity: &'static str, value: f64, unit: &'static str) -> Self {
        Self {
            quantity,
            value,
            unit,
            channel: None,
            raw: None,
        }
    }
}

/// `value` rounded to `decimals` places (sensor floats carry noise digits that are not
/// information: a BME280 resolves 0.01 °C).
pub fn round(value: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (value * f).round() / f
}

/// The payload of one reading message.
#[derive(Debug, Serialize)]
pub struct Reading<'a> {
    /// The sensor's `id`.
    pub sensor: &'a str,
    /// What was measured.
    pub quantity: &'a str,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: &'a str,
    /// When it was sampled, ms since the Unix epoch (the gateway's clock).
    pub ts_ms: i64,
    /// The sample's number since the agent started; the values of one sample share it
    /// (and `ts_ms`), a gap shows a lost sample.
    pub seq: u64,
    /// The channel, for multi-channel devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<u8>,
    /// The raw converter reading, for ADCs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<u32>,
}

impl<'a> Reading<'a> {
    /// The message for one value of sample `seq` of `sensor`.
    pub fn of(sensor: &'a str, v: &'a Value, ts_ms: i64, seq: u64) -> Self {
        Self {
            sensor,
            quantity: v.quantity,
            value: v.value,
            unit: v.unit,
            ts_ms,
            seq,
            channel: v.channel,
            raw: v.raw,
        }
    }
}

/// The payload of a status message.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    /// The sensor's `id`.
    pub sensor: &'a str,
    /// `ok` (sampling) or `failing` (a fault; retrying).
    pub state: &'a str,
    /// When, ms since the Unix epoch.
    pub ts_ms: i64,
    /// Failing: the fault kind (`missing_device`, `nack`, `bus`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    /// Failing: what the driver or the OS said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// Failing: consecutive failed attempts so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    /// Failing: when the next attempt is made, ms from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reading_json_has_the_documented_fields() {
        let v = Value::new("temperature", round(21.534_999, 2), "°C");
        let json =
            serde_json::to_string(&Reading::of("bme280-1", &v, 1_764_100_000_000, 7)).unwrap();
        assert_eq!(
            json,
            r#"{"sensor":"bme280-1","quantity":"temperature","value":21.53,"unit":"°C","ts_ms":1764100000000,"seq":7}"#
        );
        let v = Value {
            channel: Some(3),
            raw: Some(512),
            ..Value::new("voltage", 1.6516, "V")
        };
        let json: serde_json::Value = serde_json::to_value(Reading::of("adc", &v, 1, 1)).unwrap();
        assert_eq!(json["channel"], 3);
        assert_eq!(json["raw"], 512);
    }
}
