//! Opening the configured devices on the gateway through linux-embedded-hal:
//! `/dev/i2c-N` (`I2cdev`), `/dev/spidevB.C` (`SpidevDevice`, mode 0, 8 bits) and a
//! line of `/dev/gpiochipN` through the GPIO character device (`CdevPin`; not the
//! deprecated sysfs interface). Open failures become [`FaultKind`]s: a missing file is
//! `missing_device`, `EACCES` is `permission`.

use std::io;
use std::sync::Arc;

use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::i2cdev::linux::LinuxI2CError;
use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
use linux_embedded_hal::{CdevPin, Delay, I2cdev, SpidevDevice};

use super::bme280::Bme280Sensor;
use super::config::{SensorConfig, SensorKind, SimQuantity};
use super::digital::{DigitalInput, MonotonicClock};
use super::mcp3008::Mcp3008;
use super::sampler::{Opener, Sampler};
use super::simulated::Simulated;
use crate::error::{Error, Result};
use crate::fault_kind::FaultKind;

fn open_fault(path: &str, e: &io::Error) -> Error {
    Error::Sensor {
        kind: FaultKind::of_io(e),
        message: format!("cannot open {path}: {e}"),
    }
}

fn i2c_open_fault(path: &str, e: LinuxI2CError) -> Error {
    let e = match e {
        LinuxI2CError::Io(e) => e,
        LinuxI2CError::Errno(n) => io::Error::from_raw_os_error(n),
    };
    open_fault(path, &e)
}

fn gpio_fault(chip: &str, line: u32, e: &linux_embedded_hal::gpio_cdev::Error) -> Error {
    use std::error::Error as _;
    // gpio-cdev keeps its error kind private: an I/O source is an open failure, another
    // source an ioctl failure, none a request out of range (no such line).
    let kind = match e.source() {
        Some(s) => s
            .downcast_ref::<io::Error>()
            .map_or(FaultKind::Bus, FaultKind::of_io),
        None => FaultKind::MissingDevice,
    };
    Error::Sensor {
        kind,
        message: format!("{chip} line {line}: {e}"),
    }
}

/// The opener of a checked sensor config.
pub fn opener(cfg: &SensorConfig) -> Opener {
    let cfg = cfg.clone();
    Arc::new(move || open(&cfg))
}

fn open(cfg: &SensorConfig) -> Result<Box<dyn Sampler>> {
    let missing = |key: &str| Error::Config {
        field: format!("sensor {:?}.{key}", cfg.id),
        reason: "missing".into(),
    };
    match cfg.sensor_kind() {
        Some(SensorKind::Bme280) => {
            let bus = cfg.bus.as_deref().ok_or_else(|| missing("bus"))?;
            let address = cfg
                .address
                .and_then(|a| u8::try_from(a).ok())
                .ok_or_else(|| missing("address"))?;
            let i2c = I2cdev::new(bus).map_err(|e| i2c_open_fault(bus, e))?;
            Ok(Box::new(Bme280Sensor::init(i2c, address, Delay)?))
        }
        Some(SensorKind::Mcp3008) => {
            let path = cfg.device.as_deref().ok_or_else(|| missing("device"))?;
            let mut spi = SpidevDevice::open(path).map_err(|e| open_fault(path, e.inner()))?;
            let options = SpidevOptions::new()
                .bits_per_word(8)
                .max_speed_hz(cfg.spi_hz.unwrap_or(1_000_000))
                .mode(SpiModeFlags::SPI_MODE_0)
                .build();
            spi.configure(&options).map_err(|e| Error::Sensor {
                kind: FaultKind::Bus,
                message: format!("cannot configure {path}: {e}"),
            })?;
            Ok(Box::new(Mcp3008::new(
                spi,
                cfg.channels(),
                cfg.vref.unwrap_or(3.3),
            )))
        }
        Some(SensorKind::Digital) => {
            let chip_path = cfg.chip.as_deref().ok_or_else(|| missing("chip"))?;
            let offset = cfg.line.ok_or_else(|| missing("line"))?;
            let fault = |e| gpio_fault(chip_path, offset, &e);
            let mut chip = Chip::new(chip_path).map_err(fault)?;
            let handle = chip
                .get_line(offset)
                .and_then(|l| l.request(LineRequestFlags::INPUT, 0, "edge-agent"))
                .map_err(fault)?;
            let pin = CdevPin::new(handle).map_err(fault)?;
            Ok(Box::new(DigitalInput::new(
                pin,
                MonotonicClock::new(),
                cfg.active_low.unwrap_or(false),
                cfg.debounce_ms.unwrap_or(50),
            )))
        }
        Some(SensorKind::Simulated) => Ok(Box::new(Simulated::new(
            cfg.sim_quantity().unwrap_or(SimQuantity::Temperature),
            cfg.period_secs.unwrap_or(600),
        ))),
        None => Err(Error::Config {
            field: format!("sensor {:?}.type", cfg.id),
            reason: format!("unknown type {:?}", cfg.kind),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn sensor(table: &str) -> SensorConfig {
        let text = format!("id = \"s\"\ntopic = \"t\"\n{table}\n");
        let sensor: SensorConfig = mqtt::config_file::from_toml(&text).unwrap();
        sensor.check(0).unwrap();
        sensor
    }

    fn open_kind(table: &str) -> (FaultKind, String) {
        match open(&sensor(table)) {
            Err(Error::Sensor { kind, message }) => (kind, message),
            Err(other) => panic!("expected a sensor fault, got {other}"),
            Ok(_) => panic!("{table} opened"),
        }
    }

    #[test]
    fn missing_device_files_are_missing_device_faults() {
        let (kind, msg) = open_kind("type = \"bme280\"\nbus = \"/dev/i2c-99\"\naddress = 0x76");
        assert_eq!(kind, FaultKind::MissingDevice);
        assert!(msg.contains("/dev/i2c-99"), "{msg}");
        let (kind, msg) = open_kind("type = \"mcp3008\"\ndevice = \"/dev/spidev9.9\"");
        assert_eq!(kind, FaultKind::MissingDevice);
        assert!(msg.contains("/dev/spidev9.9"), "{msg}");
        let (kind, msg) = open_kind("type = \"digital\"\nchip = \"/dev/gpiochip99\"\nline = 4");
        assert_eq!(kind, FaultKind::MissingDevice);
        assert!(msg.contains("/dev/gpiochip99"), "{msg}");
    }

    #[test]
    fn os_errors_map_to_kinds() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(FaultKind::of_io(&os(2)), FaultKind::MissingDevice); // ENOENT
        assert_eq!(FaultKind::of_io(&os(13)), FaultKind::Permission); // EACCES
        assert_eq!(FaultKind::of_io(&os(6)), FaultKind::MissingDevice); // ENXIO
        assert_eq!(FaultKind::of_io(&os(19)), FaultKind::MissingDevice); // ENODEV
        assert_eq!(FaultKind::of_io(&os(5)), FaultKind::Bus); // EIO
    }

    #[test]
    fn a_simulated_sensor_opens_and_samples() {
        let mut s = open(&sensor("type = \"simulated\"\nquantity = \"pressure\"")).unwrap();
        let v = s.sample().unwrap();
        assert_eq!((v.len(), v[0].quantity, v[0].unit), (1, "pressure", "hPa"));
        assert!(s.is_quick());
    }
}
