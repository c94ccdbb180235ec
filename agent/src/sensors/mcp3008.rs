//! The MCP3008 8-channel 10-bit ADC over SPI: a small driver of its own.
//!
//! Hand-written because no crate fits: the MCP3008 crates on crates.io are for
//! embedded-hal 0.1/0.2 (`adc-mcp3008`) or talk to spidev directly (`mcp3008`), not
//! through the embedded-hal 1.0 `SpiDevice` trait that the tests mock. The protocol is
//! one 3-byte full-duplex transfer per conversion (datasheet §6.1, figure 6-1):
//!
//! ```text
//! MOSI: 0000_0001  SDDD_xxxx  xxxx_xxxx     start bit; S = 1 single-ended, DDD = channel
//! MISO: xxxx_xxxx  xxxx_x0BB  BBBB_BBBB     0 = null bit, B9..B0 = the result
//! ```
//!
//! Chip select is the kernel's (`/dev/spidevB.C`): one `SpiDevice::transaction` per
//! conversion. A null bit that reads 1 means nothing drives MISO (no chip, a floating
//! line reads all ones): that is reported as [`FaultKind::InvalidData`] rather than as
//! a full-scale reading.

use embedded_hal::spi::SpiDevice;

use super::reading::{Value, round};
use super::sampler::Sampler;
use crate::error::{Error, Result};
use crate::fault_kind::FaultKind;

/// Full scale of the 10-bit converter.
pub const FULL_SCALE: u16 = 1023;

/// The 3 bytes sent for a single-ended conversion of `channel` (0..=7).
pub fn command(channel: u8) -> [u8; 3] {
    [0x01, 0x80 | ((channel & 0x07) << 4), 0x00]
}

/// An MCP3008 on an SPI device.
#[derive(Debug)]
pub struct Mcp3008<SPI> {
    spi: SPI,
    channels: Vec<u8>,
    vref: f64,
}

impl<SPI: SpiDevice> Mcp3008<SPI> {
    /// Reads `channels` (0..=7, checked by the config) against reference `vref` volts.
    pub fn new(spi: SPI, channels: Vec<u8>, vref: f64) -> Self {
        Self {
            spi,
            channels,
            vref,
        }
    }

    /// One single-ended conversion: counts 0..=1023.
    pub fn read_raw(&mut self, channel: u8) -> Result<u16> {
        let mut buf = command(channel);
        self.spi.transfer_in_place(&mut buf).map_err(|e| {
            let kind = FaultKind::of_spi(&e);
            Error::Sensor {
                kind,
                message: format!("SPI {kind} reading MCP3008 channel {channel}: {e:?}"),
            }
        })?;
        if buf[1] & 0x04 != 0 {
            return Err(Error::Sensor {
                kind: FaultKind::InvalidData,
                message: format!(
                    "MCP3008 channel {channel}: null bit high (answer {buf:02x?}); is the chip connected?"
                ),
            });
        }
        Ok((u16::from(buf[1] & 0x03) << 8) | u16::from(buf[2]))
    }

    /// Every configured channel, as volts (with the raw counts).
    pub fn read_all(&mut self) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(self.channels.len());
        for i in 0..self.channels.len() {
            let ch = self.channels[i];
            let raw = self.read_raw(ch)?;
            let volts = f64::from(raw) * self.vref / f64::from(FULL_SCALE + 1);
            out.push(Value {
                channel: Some(ch),
                raw: Some(u32::from(raw)),
                ..Value::new("voltage", round(volts, 4), "V")
            });
        }
        Ok(out)
    }
}

impl<SPI: SpiDevice + Send + 'static> Sampler for Mcp3008<SPI> {
    fn sample(&mut self) -> Result<Vec<Value>> {
        self.read_all()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use embedded_hal::spi::{ErrorKind, ErrorType, Operation};
    use embedded_hal_mock::eh1::spi::{Mock, Transaction as T};

    use super::*;

    /// One conversion as the mock expects it: CS down, 3 bytes both ways, CS up.
    fn conversion(channel: u8, answer: [u8; 3]) -> Vec<T<u8>> {
        vec![
            T::transaction_start(),
            T::transfer_in_place(command(channel).to_vec(), answer.to_vec()),
            T::transaction_end(),
        ]
    }

    #[test]
    fn single_ended_frames_for_every_channel() {
        let expected_tx: [[u8; 3]; 8] = [
            [0x01, 0x80, 0x00],
            [0x01, 0x90, 0x00],
            [0x01, 0xA0, 0x00],
            [0x01, 0xB0, 0x00],
            [0x01, 0xC0, 0x00],
            [0x01, 0xD0, 0x00],
            [0x01, 0xE0, 0x00],
            [0x01, 0xF0, 0x00],
        ];
        for (ch, tx) in expected_tx.iter().enumerate() {
            assert_eq!(command(ch as u8), *tx, "channel {ch}");
        }
        // Result bits: B9..B8 in the second byte's low bits (above them the null
        // bit, 0), B7..B0 in the third; the rest of the answer is don't-care.
        let mut expected = conversion(0, [0xFF, 0xFB, 0xFF]); // 1023, junk high bits
        expected.extend(conversion(5, [0x00, 0x02, 0x00])); // 512
        expected.extend(conversion(7, [0x00, 0x00, 0x01])); // 1
        let mut spi = Mock::new(&expected);
        let mut adc = Mcp3008::new(spi.clone(), vec![0, 5, 7], 3.3);
        let v = adc.read_all().unwrap();
        spi.done();
        let raw: Vec<_> = v.iter().map(|v| (v.channel, v.raw)).collect();
        assert_eq!(
            raw,
            [
                (Some(0), Some(1023)),
                (Some(5), Some(512)),
                (Some(7), Some(1))
            ]
        );
        assert_eq!(v[1].value, 1.65);
        assert_eq!(v[0].value, round(1023.0 * 3.3 / 1024.0, 4));
        assert!(v.iter().all(|v| v.quantity == "voltage" && v.unit == "V"));
    }

    #[test]
    fn a_high_null_bit_is_invalid_data_not_full_scale() {
        let mut spi = Mock::new(&conversion(2, [0xFF, 0xFF, 0xFF]));
        let mut adc = Mcp3008::new(spi.clone(), vec![2], 3.3);
        match adc.read_all() {
            Err(Error::Sensor { kind, message }) => {
                assert_eq!(kind, FaultKind::InvalidData);
                assert!(message.contains("channel 2"), "{message}");
            }
            other => panic!("expected invalid data, got {other:?}"),
        }
        spi.done();
    }

    /// An SPI device whose transfers fail (the mock cannot inject SPI errors).
    struct Failing;
    impl ErrorType for Failing {
        type Error = ErrorKind;
    }
    impl SpiDevice for Failing {
        fn transaction(&mut self, _: &mut [Operation<'_, u8>]) -> Result<(), ErrorKind> {
            Err(ErrorKind::Other)
        }
    }

    #[test]
    fn a_failed_transfer_is_a_bus_fault() {
        let mut adc = Mcp3008::new(Failing, vec![0], 3.3);
        match adc.sample() {
            Err(Error::Sensor { kind, .. }) => assert_eq!(kind, FaultKind::Bus),
            other => panic!("expected a bus fault, got {other:?}"),
        }
    }
}
