//! Which accepted sockets a server keeps: at most `max_connections` open, at most
//! `per_address` open from one source address, and at most `rate_per_address` new ones
//! per second from one source address (a token bucket holding two seconds' worth).
//!
//! A refused socket is closed at once, before anything is read from it (no CONNECT is
//! parsed, so no reason code can be sent: a clean close). Refusals are counted in the
//! server's counters and logged as one summary line at most every
//! [`SUMMARY_EVERY`], never one line per socket.
//!
//! Invariants: the per-address table holds only addresses with an open socket or a
//! bucket not yet refilled, and at most `max_connections` + [`MAX_IDLE_ADDRESSES`]
//! entries; a connection's [`Admitted`] gives its slot back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::metrics::ServerCounters;
use crate::metrics::counters::Throttle;

/// Most often a refusal summary is logged.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Addresses without an open socket whose buckets are remembered at most.
pub const MAX_IDLE_ADDRESSES: usize = 4096;

/// Per-address bounds (0 = no bound).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AdmissionConfig {
    /// Sockets one source address may have open.
    pub per_address: usize,
    /// New sockets one source address may open per second (bursts of twice that).
    pub rate_per_address: f64,
}

#[derive(Debug)]
struct Address {
    open: usize,
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Summary {
    since: Option<Instant>,
    limit: u64,
    per_address: u64,
    rate: u64,
}

/// The admission state of one server (shared by its listeners).
#[derive(Debug)]
pub struct Admission {
    limit: Arc<Semaphore>,
    max_connections: usize,
    config: AdmissionConfig,
    addresses: Mutex<HashMap<IpAddr, Address>>,
    summary: Mutex<Summary>,
}

/// An admitted socket's slots; given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    address: Option<(Arc<Admission>, IpAddr)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((a, ip)) = &self.address {
            let mut m = a.addresses.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = m.get_mut(ip) {
                e.open = e.open.saturating_sub(1);
            }
        }
    }
}

/// Why a socket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Limit,
    Throttled(Throttle),
}

impl Admission {
    /// At most `max_connections` sockets open, and the per-address bounds of `config`.
    pub fn new(max_connections: usize, config: AdmissionConfig) -> Self {
        Self {
            limit: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            config,
            addresses: Mutex::default(),
            summary: Mutex::default(),
        }
    }

    /// Admits a socket from `ip`, or refuses it (counted, and summarised in the log).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, counters: &ServerCounters) -> Option<Admitted> {
        match self.try_admit(ip, Instant::now()) {
            Ok(a) => Some(a),
            Err(why) => {
                match why {
                    Refused::Limit => counters.refused(),
                    Refused::Throttled(t) => counters.throttled(t),
                }
                self.summarise(why);
                None
            }
        }
    }

    fn try_admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Admitted, Refused> {
        let per_address = self.config.per_address > 0 || self.config.rate_per_address > 0.0;
        if !per_address {
            let permit = self
                .limit
                .clone()
                .try_acquire_owned()
                .map_err(|_| Refused::Limit)?;
            return Ok(Admitted {
                _permit: permit,
                address: None,
            });
        }
        let mut m = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let burst = self.config.rate_per_address * 2.0;
        if !m.contains_key(&ip) && m.len() >= self.max_connections + MAX_IDLE_ADDRESSES {
            // Forget addresses with nothing open (their buckets refill as if new).
            m.retain(|_, e| e.open > 0);
        }
        let e = m.entry(ip).or_insert(Address {
            open: 0,
            tokens: burst,
            at: now,
        });
        if self.config.rate_per_address > 0.0 {
            let elapsed = now.saturating_duration_since(e.at).as_secs_f64();
            e.tokens = (e.tokens + elapsed * self.config.rate_per_address).min(burst);
            e.at = now;
            if e.tokens < 1.0 {
                return Err(Refused::Throttled(Throttle::Rate));
            }
        }
        if self.config.per_address > 0 && e.open >= self.config.per_address {
            return Err(Refused::Throttled(Throttle::PerAddress));
        }
        let permit = self
            .limit
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Limit)?;
        if self.config.rate_per_address > 0.0 {
            e.tokens -= 1.0;
        }
        e.open += 1;
        Ok(Admitted {
            _permit: permit,
            address: Some((self.clone(), ip)),
        })
    }

    fn summarise(&self, why: Refused) {
        let mut s = self.summary.lock().unwrap_or_else(|p| p.into_inner());
        match why {
            Refused::Limit => s.limit += 1,
            Refused::Throttled(Throttle::PerAddress) => s.per_address += 1,
            Refused::Throttled(Throttle::Rate) => s.rate += 1,
        }
        let now = Instant::now();
        if s.since
            .is_some_and(|t| now.duration_since(t) < SUMMARY_EVERY)
        {
            return;
        }
        warn!(
            max_connections = s.limit,
            per_address = s.per_address,
            rate = s.rate,
            "sockets closed at accept since the last summary (counted in connections_refused and connections_throttled)"
        );
        *s = Summary {
            since: Some(now),
            ..Summary::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn per_address_and_rate_bounds() {
        let a = Arc::new(Admission::new(
            100,
            AdmissionConfig {
                per_address: 3,
                rate_per_address: 1.0,
            },
        ));
        let t = Instant::now();
        // A burst of two, then the rate.
        let mut held: Vec<_> = (0..2).filter_map(|_| a.try_admit(ip(1), t).ok()).collect();
        assert_eq!(held.len(), 2);
        assert_eq!(
            a.try_admit(ip(1), t).err(),
            Some(Refused::Throttled(Throttle::Rate))
        );
        assert!(a.try_admit(ip(2), t).is_ok());
        let later = t + Duration::from_secs(2);
        held.extend(a.try_admit(ip(1), later).ok());
        assert_eq!(held.len(), 3);
        assert_eq!(
            a.try_admit(ip(1), later).err(),
            Some(Refused::Throttled(Throttle::PerAddress))
        );
        drop(held);
        assert!(a.try_admit(ip(1), later).is_ok());
    }
}
