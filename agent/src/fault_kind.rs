//! Hardware fault kinds: what went wrong with a sensor, as a small fixed set so that
//! counters can be kept per kind (`sensor_errors_total{sensor,kind}`).
//!
//! The embedded-hal 1.0 error kinds of I2C, SPI and digital pins map onto these; so do
//! the errors of opening a Linux device file (`ENOENT` is a missing device, `EACCES` a
//! permission problem: the service user is not in the i2c/spi/gpio group).
//!
//! A leaf module at the crate root, not under `sensors`: the crate's error type names
//! the kind of a sensor fault, and `error` must not depend on a module above it.

use std::io;

/// Why a sensor operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The device file does not exist (`/dev/i2c-99`), or the device vanished.
    MissingDevice,
    /// The device file exists but may not be opened (group membership).
    Permission,
    /// No acknowledge on I2C: nothing at that address, or the chip is busy.
    Nack,
    /// A bus error (I2C `EIO`/`EBUSY`, an SPI or GPIO ioctl failure).
    Bus,
    /// I2C arbitration lost to another master.
    ArbitrationLoss,
    /// Data overrun.
    Overrun,
    /// Something answered, but it is not the chip configured (BME280 chip id).
    UnsupportedChip,
    /// The chip answered with data that cannot be right (MCP3008 null bit high).
    InvalidData,
    /// The local broker refused a reading (journal full or closed).
    Publish,
    /// Anything else.
    Other,
}

impl FaultKind {
    /// Every kind, in counter order.
    pub const ALL: [FaultKind; 10] = [
        Self::MissingDevice,
        Self::Permission,
        Self::Nack,
        Self::Bus,
        Self::ArbitrationLoss,
        Self::Overrun,
        Self::UnsupportedChip,
        Self::InvalidData,
        Self::Publish,
        Self::Other,
    ];

    /// The label value (`kind="nack"`), also the `kind` field of status messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingDevice => "missing_device",
            Self::Permission => "permission",
            Self::Nack => "nack",
            Self::Bus => "bus",
            Self::ArbitrationLoss => "arbitration_loss",
            Self::Overrun => "overrun",
            Self::UnsupportedChip => "unsupported_chip",
            Self::InvalidData => "invalid_data",
            Self::Publish => "publish",
            Self::Other => "other",
        }
    }

    /// Position in [`FaultKind::ALL`].
    pub fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or(Self::ALL.len() - 1)
    }

    /// The kind of an I2C error.
    pub fn of_i2c(e: &impl embedded_hal::i2c::Error) -> Self {
        use embedded_hal::i2c::ErrorKind;
        match e.kind() {
            ErrorKind::NoAcknowledge(_) => Self::Nack,
            ErrorKind::Bus => Self::Bus,
            ErrorKind::ArbitrationLoss => Self::ArbitrationLoss,
            ErrorKind::Overrun => Self::Overrun,
            _ => Self::Other,
        }
    }

    /// The kind of an SPI error (Linux spidev reports every failure as `Other`: a
    /// failed transfer ioctl is a bus error).
    pub fn of_spi(e: &impl embedded_hal::spi::Error) -> Self {
        use embedded_hal::spi::ErrorKind;
        match e.kind() {
            ErrorKind::Overrun => Self::Overrun,
            _ => Self::Bus,
        }
    }

    /// The kind of a failed open of a device file.
    pub fn of_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => Self::MissingDevice,
            io::ErrorKind::PermissionDenied => Self::Permission,
            _ if matches!(e.raw_os_error(), Some(ENXIO | ENODEV)) => Self::MissingDevice,
            _ => Self::Bus,
        }
    }
}

/// Linux `ENXIO` and `ENODEV` (a device file whose device is gone).
const ENXIO: i32 = 6;
const ENODEV: i32 = 19;

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
