//! A simulated sensor for machines without hardware (the demo runs one): a slow sine
//! (period `period_secs`, default 600 s) around a plausible mean, plus a little noise.
//!
//! | quantity      | mean   | amplitude | noise (±) | unit |
//! |---------------|--------|-----------|-----------|------|
//! | `temperature` | 21.0   | 3.0       | 0.05      | °C   |
//! | `humidity`    | 45.0   | 10.0      | 0.3       | %    |
//! | `pressure`    | 1013.25| 3.0       | 0.05      | hPa  |
//! | `voltage`     | 1.65   | 1.0       | 0.005     | V    |
//!
//! It is published exactly like a real sensor (same task, schema and status topic).

use std::time::Instant;

use rand::Rng;

use super::config::SimQuantity;
use super::reading::{Value, round};
use super::sampler::Sampler;
use crate::error::Result;

/// Generated values following a sine.
#[derive(Debug)]
pub struct Simulated {
    quantity: SimQuantity,
    period_secs: f64,
    start: Instant,
}

impl Simulated {
    /// A `quantity` with a sine of `period_secs`.
    pub fn new(quantity: SimQuantity, period_secs: u64) -> Self {
        Self {
            quantity,
            period_secs: period_secs.max(1) as f64,
            start: Instant::now(),
        }
    }

    /// (mean, amplitude, noise, unit, decimals).
    fn shape(&self) -> (f64, f64, f64, &'static str, i32) {
        match self.quantity {
            SimQuantity::Temperature => (21.0, 3.0, 0.05, "°C", 2),
            SimQuantity::Humidity => (45.0, 10.0, 0.3, "%", 2),
            SimQuantity::Pressure => (1013.25, 3.0, 0.05, "hPa", 2),
            SimQuantity::Voltage => (1.65, 1.0, 0.005, "V", 4),
        }
    }

    /// The value at `t` seconds after start.
    pub fn value_at(&self, t: f64) -> Value {
        let (mean, amplitude, noise, unit, decimals) = self.shape();
        let phase = std::f64::consts::TAU * t / self.period_secs;
        let jitter = rand::rng().random_range(-noise..=noise);
        Value::new(
            self.quantity.as_str(),
            round(mean + amplitude * phase.sin() + jitter, decimals),
            unit,
        )
    }
}

impl Sampler for Simulated {
    fn sample(&mut self) -> Result<Vec<Value>> {
        Ok(vec![self.value_at(self.start.elapsed().as_secs_f64())])
    }

    fn is_quick(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_in_a_plausible_band() {
        for q in [
            SimQuantity::Temperature,
            SimQuantity::Humidity,
            SimQuantity::Pressure,
            SimQuantity::Voltage,
        ] {
            let s = Simulated::new(q, 60);
            let (mean, amplitude, noise, unit, _) = s.shape();
            for i in 0..120 {
                let v = s.value_at(f64::from(i));
                assert_eq!(v.unit, unit);
                assert_eq!(v.quantity, q.as_str());
                assert!((v.value - mean).abs() <= amplitude + noise + 0.01, "{v:?}");
            }
            // A quarter period in, the sine is at its top.
            assert!(s.value_at(15.0).value > mean + amplitude - noise - 0.01);
        }
    }
}
