//! A digital input (a GPIO line through the character device), published on change
//! after debouncing.
//!
//! The line is polled every `interval_ms` (default 10 ms) through the embedded-hal 1.0
//! `InputPin` trait. [`Debouncer`] is the pure core: a level counts once the line has
//! read it continuously for `debounce_ms` (default 50 ms); shorter pulses (contact
//! bounce, spikes) are ignored. The first stable level after start is published too,
//! so a subscriber learns the state without waiting for a change (and again after a
//! fault, once the line is opened anew). The value is 1 or 0 (quantity `input`, no
//! unit); `active_low = true` inverts it (a switch to ground with a pull-up reads 1
//! when closed).
//!
//! Time comes from a [`Clock`], so the tests drive the debouncer with a fake clock.
//! Polling instead of line events: linux-embedded-hal's `CdevPin` offers the
//! embedded-hal `InputPin` (the trait the tests mock), and a 10 ms poll is one cheap
//! ioctl, well below what a contact or a presence sensor needs.

use std::time::Instant;

use embedded_hal::digital::InputPin;

use super::reading::Value;
use super::sampler::Sampler;
use crate::error::{Error, Result};
use crate::fault_kind::FaultKind;

/// A source of monotonic milliseconds.
pub trait Clock: Send + 'static {
    /// Milliseconds since some fixed start.
    fn now_ms(&self) -> u64;
}

/// The real clock: milliseconds since it was made.
#[derive(Debug)]
pub struct MonotonicClock(Instant);

impl MonotonicClock {
    /// Starts at 0 now.
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Debounce state (pure: levels and times in, accepted changes out).
#[derive(Debug, Clone)]
pub struct Debouncer {
    debounce_ms: u64,
    /// The accepted level (`None` until the first level was stable).
    stable: Option<bool>,
    /// The level being read now and since when.
    candidate: Option<(bool, u64)>,
}

impl Debouncer {
    /// A level must hold `debounce_ms` to count.
    pub fn new(debounce_ms: u64) -> Self {
        Self {
            debounce_ms,
            stable: None,
            candidate: None,
        }
    }

    /// The accepted level.
    pub fn level(&self) -> Option<bool> {
        self.stable
    }

    /// Feeds one read `level` at `now_ms`; returns the new accepted level when it
    /// changed (or was accepted for the first time).
    pub fn update(&mut self, level: bool, now_ms: u64) -> Option<bool> {
        if self.stable == Some(level) {
            self.candidate = None;
            return None;
        }
        match self.candidate {
            Some((l, since)) if l == level => {
                if now_ms.saturating_sub(since) >= self.debounce_ms {
                    self.stable = Some(level);
                    self.candidate = None;
                    return Some(level);
                }
                None
            }
            _ => {
                self.candidate = Some((level, now_ms));
                if self.debounce_ms == 0 {
                    self.stable = Some(level);
                    self.candidate = None;
                    return Some(level);
                }
                None
            }
        }
    }
}

/// A debounced input pin.
#[derive(Debug)]
pub struct DigitalInput<P, C> {
    pin: P,
    clock: C,
    active_low: bool,
    debouncer: Debouncer,
}

impl<P: InputPin, C: Clock> DigitalInput<P, C> {
    /// Reads `pin` (its physical level; `active_low` inverts it) with `debounce_ms`.
    pub fn new(pin: P, clock: C, active_low: bool, debounce_ms: u64) -> Self {
        Self {
            pin,
            clock,
            active_low,
            debouncer: Debouncer::new(debounce_ms),
        }
    }

    /// Reads the pin once: the new value if the debounced level changed.
    pub fn poll(&mut self) -> Result<Option<Value>> {
        let high = self.pin.is_high().map_err(|e| Error::Sensor {
            kind: FaultKind::Bus,
            message: format!("GPIO read failed: {e:?}"),
        })?;
        let level = high != self.active_low;
        Ok(self
            .debouncer
            .update(level, self.clock.now_ms())
            .map(|l| Value::new("input", if l { 1.0 } else { 0.0 }, "")))
    }
}

impl<P, C> Sampler for DigitalInput<P, C>
where
    P: InputPin + Send + 'static,
    C: Clock,
{
    fn sample(&mut self) -> Result<Vec<Value>> {
        Ok(self.poll()?.into_iter().collect())
    }

    fn is_quick(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use embedded_hal_mock::eh1::MockError;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

    use super::*;

    /// A clock the test moves.
    #[derive(Clone, Default)]
    struct FakeClock(Arc<AtomicU64>);
    impl FakeClock {
        fn set(&self, ms: u64) {
            self.0.store(ms, Ordering::SeqCst);
        }
    }
    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Polls `levels` at the given times; returns the published values (time, value).
    fn run(levels: &[(u64, State)], active_low: bool, debounce_ms: u64) -> Vec<(u64, f64)> {
        let expected: Vec<T> = levels.iter().map(|(_, s)| T::get(*s)).collect();
        let mut pin = Mock::new(&expected);
        let clock = FakeClock::default();
        let mut input = DigitalInput::new(pin.clone(), clock.clone(), active_low, debounce_ms);
        let mut out = Vec::new();
        for (t, _) in levels {
            clock.set(*t);
            for v in input.sample().unwrap() {
                assert_eq!((v.quantity, v.unit), ("input", ""));
                out.push((*t, v.value));
            }
        }
        pin.done();
        out
    }

    use State::{High as H, Low as L};

    #[test]
    fn first_stable_level_then_changes_only_after_the_debounce_time() {
        let levels = [
            (0, L),
            (10, L),
            (50, L), // stable 50 ms: initial level 0 published
            (60, H), // bounce
            (70, L),
            (80, H),
            (90, L),
            (100, H), // now it holds
            (120, H),
            (149, H), // 49 ms: not yet
            (150, H), // 50 ms: 1 published
            (160, H),
            (400, L), // a single low sample...
            (410, H), // ...is a spike, ignored
            (500, H),
        ];
        assert_eq!(run(&levels, false, 50), [(50, 0.0), (150, 1.0)]);
    }

    #[test]
    fn active_low_inverts_and_zero_debounce_publishes_each_change() {
        let levels = [(0, H), (1, H), (2, L), (3, L), (4, H)];
        assert_eq!(run(&levels, true, 0), [(0, 0.0), (2, 1.0), (4, 0.0)]);
    }

    #[test]
    fn a_failing_read_is_a_bus_fault_without_panic() {
        let mut pin = Mock::new(&[T::get(H).with_error(MockError::Io(std::io::ErrorKind::Other))]);
        let mut input = DigitalInput::new(pin.clone(), FakeClock::default(), false, 50);
        match input.sample() {
            Err(Error::Sensor { kind, .. }) => assert_eq!(kind, FaultKind::Bus),
            other => panic!("expected a fault, got {other:?}"),
        }
        pin.done();
    }
}
