//! Keepalive: what the server grants at CONNECT and when the client's silence ends the
//! connection; and, on the client's side ([`Pinger`]), when to send PINGREQ and when a
//! missing PINGRESP ends the connection.
//!
//! Invariants (server side):
//! - the server closes a connection after 1.5 × the granted keepalive without a packet
//!   (MQTT 5 3.1.2-22; 0 turns it off);
//! - with a `max_keepalive` below 65535, an MQTT 5 client asking for more, or for 0, is
//!   granted `max_keepalive` and told so in CONNACK's Server Keep Alive (3.2.2-21); a
//!   3.1.1 client asking for more, which cannot be told, is refused with "identifier
//!   rejected", as mosquitto's documentation says; a 3.1.1 client asking for 0 keeps 0
//!   (it cannot be told either, and refusing it would shut out the keepalive-0 clients
//!   of 3.1.1, the Paho 3.1.1 suite's among them, from any server with a cap). 65535 (the default, as in mosquitto) and 0 (mosquitto's "allow
//!   keepalive 0") are no cap at all, so keepalive 0 ("never time out", which sleepy
//!   devices and the existing clients use) stays available by default.

use std::time::{Duration, Instant};

use crate::packet::{Reason, Version};

/// `max_keepalive` meaning "no cap".
pub const NO_CAP: u16 = u16::MAX;

/// The keepalive granted to a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Seconds the server holds the client to (0: off).
    pub keep_alive: u16,
    /// Server Keep Alive for CONNACK, when it differs from the client's.
    pub server_keep_alive: Option<u16>,
}

/// Grants a keepalive to a client asking for `requested` seconds.
pub fn grant(version: Version, requested: u16, max_keepalive: u16) -> Result<Grant, Reason> {
    if max_keepalive == NO_CAP
        || max_keepalive == 0
        || (requested != 0 && requested <= max_keepalive)
    {
        return Ok(Grant {
            keep_alive: requested,
            server_keep_alive: None,
        });
    }
    match version {
        Version::V5 => Ok(Grant {
            keep_alive: max_keepalive,
            server_keep_alive: Some(max_keepalive),
        }),
        Version::V311 if requested == 0 => Ok(Grant {
            keep_alive: 0,
            server_keep_alive: None,
        }),
        Version::V311 => Err(Reason::ClientIdentifierNotValid),
    }
}

/// The deadline of the client's silence.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    grace: Option<Duration>,
    deadline: Option<Instant>,
}

impl KeepAlive {
    /// Holds the client to `secs` (0: never times out), counting from `now`.
    pub fn new(secs: u16, now: Instant) -> Self {
        let grace = (secs > 0).then(|| Duration::from_millis(u64::from(secs) * 1500));
        Self {
            grace,
            deadline: grace.map(|g| now + g),
        }
    }

    /// A packet arrived at `now`.
    pub fn packet(&mut self, now: Instant) {
        self.deadline = self.grace.map(|g| now + g);
    }

    /// When the connection times out, if nothing arrives before.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the client has been silent too long at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }
}

/// The client's keepalive: when a PINGREQ is due and when the connection is lost.
///
/// Invariants (client side):
/// - a PINGREQ goes out once nothing was written for the `interval` (MQTT 5 3.1.2-20:
///   the client sends one within the keepalive when it has nothing else to send), and
///   also when nothing came back for 1.5 × the `interval` while traffic went out (the
///   server may be gone although writes succeed: a probe);
/// - at most one PINGREQ is outstanding; no PINGRESP within the `interval` after it
///   ends the connection (3.1.2-24 lets the client close it "in a reasonable amount of
///   time").
#[derive(Debug, Clone, Copy)]
pub struct Pinger {
    interval: Duration,
    last_sent: Instant,
    last_received: Instant,
    ping_sent: Option<Instant>,
}

/// What the client's keepalive asks for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    /// Nothing.
    Idle,
    /// Send PINGREQ now (recorded as sent).
    Send,
    /// No PINGRESP within the interval: the connection is lost.
    Overdue(Duration),
}

impl Pinger {
    /// Pings every `interval` of silence (at least a millisecond), counting from `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(1)),
            last_sent: now,
            last_received: now,
            ping_sent: None,
        }
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Something was written at `now`.
    pub fn wrote(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// A packet arrived at `now` (`pong`: it was PINGRESP).
    pub fn received(&mut self, now: Instant, pong: bool) {
        self.last_received = now;
        if pong {
            self.ping_sent = None;
        }
    }

    /// Whether a PINGREQ waits for its PINGRESP.
    pub fn awaiting_pong(&self) -> bool {
        self.ping_sent.is_some()
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Ping {
        if let Some(at) = self.ping_sent {
            return if now.saturating_duration_since(at) > self.interval {
                Ping::Overdue(self.interval)
            } else {
                Ping::Idle
            };
        }
        let quiet_out = now.saturating_duration_since(self.last_sent) >= self.interval;
        // Traffic goes out but nothing comes back: probe.
        let deaf = now.saturating_duration_since(self.last_received) > self.interval.mul_f32(1.5);
        if quiet_out || deaf {
            self.ping_sent = Some(now);
            self.last_sent = now;
            Ping::Send
        } else {
            Ping::Idle
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_pings_after_an_interval_of_silence_out_3_1_2_20() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Pinger::new(10 * s, t0);
        assert_eq!(p.poll(t0 + 9 * s), Ping::Idle);
        p.wrote(t0 + 9 * s);
        p.received(t0 + 9 * s, false);
        assert_eq!(p.poll(t0 + 18 * s), Ping::Idle, "writes postpone the ping");
        assert_eq!(p.poll(t0 + 19 * s), Ping::Send);
        assert_eq!(p.poll(t0 + 19 * s), Ping::Idle, "one PINGREQ outstanding");
        p.received(t0 + 20 * s, true);
        assert!(!p.awaiting_pong());
        assert_eq!(p.poll(t0 + 28 * s), Ping::Idle);
        assert_eq!(p.poll(t0 + 29 * s), Ping::Send);
    }

    #[test]
    fn client_probes_when_nothing_comes_back_although_it_writes() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Pinger::new(10 * s, t0);
        for i in 1..=15 {
            p.wrote(t0 + i * s);
            assert_eq!(p.poll(t0 + i * s), Ping::Idle, "{i} s");
        }
        p.wrote(t0 + 16 * s);
        assert_eq!(
            p.poll(t0 + 16 * s),
            Ping::Send,
            "1.5 intervals without a packet"
        );
    }

    #[test]
    fn a_missing_pingresp_loses_the_connection_after_an_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Pinger::new(10 * s, t0);
        assert_eq!(p.poll(t0 + 10 * s), Ping::Send);
        p.received(t0 + 12 * s, false);
        assert_eq!(
            p.poll(t0 + 20 * s),
            Ping::Idle,
            "not a PINGRESP, but within the interval"
        );
        assert_eq!(p.poll(t0 + 21 * s), Ping::Overdue(10 * s));
    }

    #[test]
    fn no_cap_grants_what_is_asked_even_0() {
        for v in [Version::V311, Version::V5] {
            assert_eq!(grant(v, 0, NO_CAP).ok().map(|g| g.keep_alive), Some(0));
            assert_eq!(
                grant(v, 65535, NO_CAP).ok().map(|g| g.keep_alive),
                Some(65535)
            );
        }
    }

    #[test]
    fn server_keep_alive_caps_v5_clients_3_2_2_21() {
        let g = grant(Version::V5, 600, 60);
        assert_eq!(
            g,
            Ok(Grant {
                keep_alive: 60,
                server_keep_alive: Some(60)
            })
        );
        assert_eq!(
            grant(Version::V5, 0, 60).ok().map(|g| g.keep_alive),
            Some(60)
        );
        assert_eq!(
            grant(Version::V5, 30, 60)
                .ok()
                .and_then(|g| g.server_keep_alive),
            None
        );
    }

    #[test]
    fn v311_above_the_cap_is_refused_like_mosquitto() {
        assert_eq!(
            grant(Version::V311, 600, 60),
            Err(Reason::ClientIdentifierNotValid)
        );
        assert_eq!(grant(Version::V311, 0, 60).map(|g| g.keep_alive), Ok(0));
        assert!(grant(Version::V311, 60, 60).is_ok());
    }

    #[test]
    fn silence_of_one_and_a_half_keepalives_expires_3_1_2_22() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(10, t0);
        assert!(!k.expired(t0 + Duration::from_millis(14_999)));
        assert!(k.expired(t0 + Duration::from_secs(15)));
        k.packet(t0 + Duration::from_secs(10));
        assert!(!k.expired(t0 + Duration::from_secs(15)));
        assert!(KeepAlive::new(0, t0).deadline().is_none());
    }
}
