//! The BME280 (temperature, humidity, pressure over I2C), through the `bme280` crate.
//!
//! The crate (0.5, embedded-hal 1.0, blocking API; the most used BME280 driver, and it
//! also drives the BMP280) does the chip-id check, soft reset, calibration read and
//! Bosch's floating-point compensation. `bme280-rs` would fit as well; the choice is
//! contained in this file. This wrapper adds what the agent
//! needs around it:
//! - one chip-id read of its own first, to tell a BME280 (0x60) from a BMP280 (0x58),
//!   which has no humidity sensor: a BMP280 yields temperature and pressure only
//!   (the crate would hand back a humidity computed from nothing);
//! - the settings of Bosch's "weather monitoring" case (datasheet §3.5.1): forced mode,
//!   1x oversampling of each quantity, filter off. One measurement then takes at most
//!   9.3 ms, well inside the 40 ms the crate waits before reading the result;
//! - bus errors mapped to [`FaultKind`]s, and values rounded to the chip's resolution
//!   (0.01 °C, 0.01 %, 0.01 hPa), pressure in hPa.
//!
//! Bus transactions (7-bit address `a`), all checked in the tests below:
//! init: `write_read(a, [0xD0]) -> id` (ours), `write_read(a, [0xD0]) -> id` (crate),
//! `write(a, [0xE0, 0xB6])` (reset), `write_read(a, [0x88]) -> 26 bytes`,
//! `write_read(a, [0xE1]) -> 7 bytes` (calibration), then the configuration:
//! `0xF4` read (mode), `write [0xF2, 0x01]`, `0xF4` read, `write [0xF4, 0x24]`, `0xF5`
//! read, `write [0xF5, 0x00]`. Each sample: `0xF4` read (mode), `0xF4` read,
//! `write [0xF4, ctrl | 0x01]` (forced), 40 ms, `write_read(a, [0xF7]) -> 8 bytes`.

use bme280::i2c::BME280;
use bme280::{Configuration, IIRFilter, Oversampling};
use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::reading::{Value, round};
use super::sampler::Sampler;
use crate::error::{Error, Result};
use crate::fault_kind::FaultKind;

/// Chip-id register.
const CHIP_ID_REG: u8 = 0xD0;
/// Chip id of a BME280.
pub const BME280_ID: u8 = 0x60;
/// Chip id of a BMP280 (no humidity).
pub const BMP280_ID: u8 = 0x58;

/// An initialised BME280 (or BMP280).
pub struct Bme280Sensor<I2C, D> {
    dev: BME280<I2C>,
    delay: D,
    address: u8,
    humidity: bool,
}

impl<I2C, D> std::fmt::Debug for Bme280Sensor<I2C, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bme280Sensor")
            .field("address", &self.address)
            .field("humidity", &self.humidity)
            .finish_non_exhaustive()
    }
}

fn bus_fault<E: embedded_hal::i2c::Error>(address: u8, e: &E) -> Error {
    let kind = FaultKind::of_i2c(e);
    Error::Sensor {
        kind,
        message: format!("I2C {kind} at address {address:#04x}: {e:?}"),
    }
}

fn driver_fault<E: embedded_hal::i2c::Error>(address: u8, e: bme280::Error<E>) -> Error {
    let (kind, what) = match e {
        bme280::Error::Bus(e) => return bus_fault(address, &e),
        bme280::Error::UnsupportedChip => (FaultKind::UnsupportedChip, "not a BME280/BMP280"),
        bme280::Error::InvalidData => (FaultKind::InvalidData, "invalid data"),
        bme280::Error::CompensationFailed => (FaultKind::InvalidData, "compensation failed"),
        bme280::Error::NoCalibrationData => (FaultKind::Other, "no calibration data"),
        bme280::Error::Delay => (FaultKind::Other, "delay failed"),
    };
    Error::Sensor {
        kind,
        message: format!("BME280 at {address:#04x}: {what}"),
    }
}

/// The settings used (see the module doc).
fn settings() -> Configuration {
    Configuration::default()
        .with_temperature_oversampling(Oversampling::Oversampling1X)
        .with_pressure_oversampling(Oversampling::Oversampling1X)
        .with_humidity_oversampling(Oversampling::Oversampling1X)
        .with_iir_filter(IIRFilter::Off)
}

impl<I2C: I2c, D: DelayNs> Bme280Sensor<I2C, D> {
    /// Identifies and initialises the chip at `address` on `i2c`.
    pub fn init(mut i2c: I2C, address: u8, mut delay: D) -> Result<Self> {
        let mut id = [0u8];
        i2c.write_read(address, &[CHIP_ID_REG], &mut id)
            .map_err(|e| bus_fault(address, &e))?;
        let humidity = match id[0] {
            BME280_ID => true,
            BMP280_ID => false,
            other => {
                return Err(Error::Sensor {
                    kind: FaultKind::UnsupportedChip,
                    message: format!(
                        "chip id {other:#04x} at {address:#04x}: not a BME280 (0x60) or BMP280 (0x58)"
                    ),
                });
            }
        };
        let mut dev = BME280::new(i2c, address);
        dev.init_with_config(&mut delay, settings())
            .map_err(|e| driver_fault(address, e))?;
        Ok(Self {
            dev,
            delay,
            address,
            humidity,
        })
    }

    /// One forced-mode measurement.
    pub fn measure(&mut self) -> Result<Vec<Value>> {
        let m = self
            .dev
            .measure(&mut self.delay)
            .map_err(|e| driver_fault(self.address, e))?;
        let mut values = vec![Value::new(
            "temperature",
            round(f64::from(m.temperature), 2),
            "°C",
        )];
        if self.humidity {
            values.push(Value::new("humidity", round(f64::from(m.humidity), 2), "%"));
        }
        values.push(Value::new(
            "pressure",
            round(f64::from(m.pressure) / 100.0, 2),
            "hPa",
        ));
        Ok(values)
    }
}

impl<I2C, D> Sampler for Bme280Sensor<I2C, D>
where
    I2C: I2c + Send + 'static,
    D: DelayNs + Send + 'static,
{
    fn sample(&mut self) -> Result<Vec<Value>> {
        self.measure()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    use super::*;

    const A: u8 = 0x76;

    /// Calibration of the datasheet's worked example (BMP280 §3.12) plus typical
    /// humidity trims: T1..T3, P1..P9, reserved, H1.
    fn pt_calibration() -> Vec<u8> {
        let words: [i32; 12] = [
            27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
        ];
        let mut b: Vec<u8> = words
            .iter()
            .flat_map(|w| (*w as u16).to_le_bytes())
            .collect();
        b.push(0x00); // reserved 0xA0
        b.push(75); // H1
        b
    }

    /// H2 = 362, H3 = 0, H4 = 313, H5 = 50, H6 = 30 (0xE1..0xE7).
    fn h_calibration() -> Vec<u8> {
        vec![0x6A, 0x01, 0x00, 0x13, 0x29, 0x03, 30]
    }

    /// The datasheet example's raw values: adc_P 415148, adc_T 519888; adc_H 0x6E00.
    fn raw_sample() -> Vec<u8> {
        vec![0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x6E, 0x00]
    }

    fn init_transactions(chip_id: u8) -> Vec<T> {
        vec![
            T::write_read(A, vec![0xD0], vec![chip_id]),
            T::write_read(A, vec![0xD0], vec![chip_id]),
            T::write(A, vec![0xE0, 0xB6]),
            T::write_read(A, vec![0x88], pt_calibration()),
            T::write_read(A, vec![0xE1], h_calibration()),
            T::write_read(A, vec![0xF4], vec![0x00]),
            T::write(A, vec![0xF2, 0x01]),
            T::write_read(A, vec![0xF4], vec![0x00]),
            T::write(A, vec![0xF4, 0x24]),
            T::write_read(A, vec![0xF5], vec![0x00]),
            T::write(A, vec![0xF5, 0x00]),
        ]
    }

    fn measure_transactions() -> Vec<T> {
        vec![
            T::write_read(A, vec![0xF4], vec![0x24]),
            T::write_read(A, vec![0xF4], vec![0x24]),
            T::write(A, vec![0xF4, 0x25]),
            T::write_read(A, vec![0xF7], raw_sample()),
        ]
    }

    /// Bosch's double-precision compensation (datasheet §8.1), independent of the crate.
    fn reference() -> (f64, f64, f64) {
        let (t1, t2, t3) = (27504.0, 26435.0, -1000.0);
        let p = [
            36477.0, -10685.0, 3024.0, 2855.0, 140.0, -7.0, 15500.0, -14600.0, 6000.0,
        ];
        let (h1, h2, h3, h4, h5, h6) = (75.0, 362.0, 0.0, 313.0, 50.0, 30.0);
        let (adc_t, adc_p, adc_h) = (519888.0, 415148.0, 28160.0);
        let v1 = (adc_t / 16384.0 - t1 / 1024.0) * t2;
        let v2 = (adc_t / 131072.0 - t1 / 8192.0) * (adc_t / 131072.0 - t1 / 8192.0) * t3;
        let t_fine: f64 = v1 + v2;
        let temp = t_fine / 5120.0;
        let mut var1 = t_fine / 2.0 - 64000.0;
        let mut var2 = var1 * var1 * p[5] / 32768.0;
        var2 += var1 * p[4] * 2.0;
        var2 = var2 / 4.0 + p[3] * 65536.0;
        var1 = (p[2] * var1 * var1 / 524288.0 + p[1] * var1) / 524288.0;
        var1 = (1.0 + var1 / 32768.0) * p[0];
        let mut pr = 1048576.0 - adc_p;
        pr = (pr - var2 / 4096.0) * 6250.0 / var1;
        let var1 = p[8] * pr * pr / 2147483648.0;
        let var2 = pr * p[7] / 32768.0;
        pr += (var1 + var2 + p[6]) / 16.0;
        let h = t_fine - 76800.0;
        let h = (adc_h - (h4 * 64.0 + h5 / 16384.0 * h))
            * (h2 / 65536.0 * (1.0 + h6 / 67108864.0 * h * (1.0 + h3 / 67108864.0 * h)));
        let h = h * (1.0 - h1 * h / 524288.0);
        (temp, h, pr / 100.0)
    }

    #[test]
    fn init_calibration_and_measurement_transactions_and_values() {
        let mut expected = init_transactions(BME280_ID);
        expected.extend(measure_transactions());
        let mut i2c = Mock::new(&expected);
        let mut s = Bme280Sensor::init(i2c.clone(), A, NoopDelay).expect("init");
        let values = s.measure().expect("measure");
        i2c.done();

        let (t, h, p) = reference();
        assert!((t - 25.08).abs() < 0.01, "reference {t}");
        let get = |q: &str| {
            values
                .iter()
                .find(|v| v.quantity == q)
                .unwrap_or_else(|| panic!("{q} in {values:?}"))
                .clone()
        };
        let (vt, vh, vp) = (get("temperature"), get("humidity"), get("pressure"));
        assert_eq!((vt.unit, vh.unit, vp.unit), ("°C", "%", "hPa"));
        assert!((vt.value - t).abs() <= 0.01, "{} vs {t}", vt.value);
        assert!((vh.value - h).abs() <= 0.1, "{} vs {h}", vh.value);
        assert!((vp.value - p).abs() <= 0.05, "{} vs {p}", vp.value);
        // Rounded to the chip's resolution.
        assert_eq!(vt.value, round(vt.value, 2));
        assert_eq!(vp.value, round(vp.value, 2));
    }

    #[test]
    fn a_bmp280_yields_no_humidity() {
        let mut expected = init_transactions(BMP280_ID);
        expected.extend(measure_transactions());
        let mut i2c = Mock::new(&expected);
        let mut s = Bme280Sensor::init(i2c.clone(), A, NoopDelay).expect("init");
        let q: Vec<_> = s
            .measure()
            .expect("measure")
            .iter()
            .map(|v| v.quantity)
            .collect();
        i2c.done();
        assert_eq!(q, ["temperature", "pressure"]);
    }

    fn fault_kind(r: Result<impl std::fmt::Debug>) -> (FaultKind, String) {
        match r {
            Err(Error::Sensor { kind, message }) => (kind, message),
            other => panic!("expected a sensor fault, got {other:?}"),
        }
    }

    #[test]
    fn nack_at_the_address_is_a_nack_fault() {
        let mut i2c = Mock::new(&[T::write_read(A, vec![0xD0], vec![0])
            .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))]);
        let (kind, msg) = fault_kind(Bme280Sensor::init(i2c.clone(), A, NoopDelay));
        i2c.done();
        assert_eq!(kind, FaultKind::Nack);
        assert!(msg.contains("0x76"), "{msg}");
    }

    #[test]
    fn wrong_chip_id_is_refused() {
        let mut i2c = Mock::new(&[T::write_read(A, vec![0xD0], vec![0x61])]);
        let (kind, msg) = fault_kind(Bme280Sensor::init(i2c.clone(), A, NoopDelay));
        i2c.done();
        assert_eq!(kind, FaultKind::UnsupportedChip);
        assert!(msg.contains("0x61"), "{msg}");
    }

    #[test]
    fn bus_error_during_calibration_and_measurement() {
        let mut expected = init_transactions(BME280_ID)[..3].to_vec();
        expected.push(T::write_read(A, vec![0x88], vec![0; 26]).with_error(ErrorKind::Bus));
        let mut i2c = Mock::new(&expected);
        let (kind, _) = fault_kind(Bme280Sensor::init(i2c.clone(), A, NoopDelay));
        i2c.done();
        assert_eq!(kind, FaultKind::Bus);

        let mut expected = init_transactions(BME280_ID);
        expected.extend(measure_transactions()[..3].to_vec());
        expected
            .push(T::write_read(A, vec![0xF7], vec![0; 8]).with_error(ErrorKind::ArbitrationLoss));
        let mut i2c = Mock::new(&expected);
        let mut s = Bme280Sensor::init(i2c.clone(), A, NoopDelay).expect("init");
        let (kind, _) = fault_kind(s.measure());
        i2c.done();
        assert_eq!(kind, FaultKind::ArbitrationLoss);
    }
}
