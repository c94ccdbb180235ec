//! Publishes in flight to the peer: packet identifiers and the peer's Receive Maximum.
//! The server's deliveries to a client ([`super::session`]) and the agent's uplink
//! publishes to cloud-bridge ([`super::client`]) both take their packet ids here: one
//! allocator in the code base.
//!
//! Invariants:
//! - at most `limit` QoS 1/2 PUBLISHes are unacknowledged at once: the peer's Receive
//!   Maximum (a server's deliveries, MQTT 5 3.3.4-9: the client's, bounded by the
//!   server's own cap for 3.1.1 clients, which have none; a client's publishes, 3.3.4-7:
//!   the server's from CONNACK, bounded by the client's own window); [`Outgoing::has_room`] says whether one more may go, and the caller
//!   waits (never drops) while it is `false`;
//! - a packet identifier is never 0 and unique among the deliveries in flight;
//! - an acknowledgement frees its slot once: a PUBACK/PUBCOMP for an identifier not in
//!   flight (a duplicate, or a stray) releases nothing.

use std::collections::HashMap;

/// A delivery in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight<T> {
    /// The sender's handle (the server's backend tag; the uplink's journal entry and
    /// send time), given back when the peer acknowledges.
    tag: T,
    /// QoS 2: PUBREC received, PUBCOMP awaited.
    released: bool,
}

/// The outgoing in-flight table; `T` is what a delivery's acknowledgement gives back.
#[derive(Debug)]
pub struct Outgoing<T = u64> {
    in_flight: HashMap<u16, InFlight<T>>,
    next_pkid: u16,
    limit: usize,
}

impl<T> Outgoing<T> {
    /// A table allowing `limit` unacknowledged QoS 1/2 deliveries (at least 1).
    pub fn new(limit: u16) -> Self {
        Self {
            in_flight: HashMap::new(),
            next_pkid: 0,
            limit: usize::from(limit.max(1)),
        }
    }

    /// Whether one more QoS 1/2 delivery may be sent now.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.limit
    }

    /// Deliveries in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The most deliveries in flight at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A packet identifier not in flight (never 0). Call only while [`Self::has_room`]:
    /// then at most 65534 are in flight, so a free one exists.
    pub fn next_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid != 0 && !self.in_flight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Records a QoS 1/2 delivery sent with `pkid`.
    pub fn sent(&mut self, pkid: u16, tag: T) {
        self.in_flight.insert(
            pkid,
            InFlight {
                tag,
                released: false,
            },
        );
    }

    /// PUBACK or PUBCOMP: the delivery's tag, once.
    pub fn completed(&mut self, pkid: u16) -> Option<T> {
        self.in_flight.remove(&pkid).map(|f| f.tag)
    }

    /// PUBREC: the QoS 2 delivery now waits for PUBCOMP (its slot stays taken).
    pub fn received(&mut self, pkid: u16) {
        if let Some(f) = self.in_flight.get_mut(&pkid) {
            f.released = true;
        }
    }

    /// Whether `pkid` is in flight.
    pub fn contains(&self, pkid: u16) -> bool {
        self.in_flight.contains_key(&pkid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_maximum_bounds_deliveries_in_flight_3_3_4_9() {
        let mut o = Outgoing::new(2);
        for tag in 0..2 {
            assert!(o.has_room());
            let p = o.next_pkid();
            o.sent(p, tag);
        }
        assert!(!o.has_room());
        assert_eq!(o.completed(1), Some(0));
        assert!(o.has_room());
        assert_eq!(o.completed(1), None, "a duplicate PUBACK frees nothing");
    }

    #[test]
    fn pkids_skip_zero_and_ids_in_flight() {
        let mut o = Outgoing::new(u16::MAX);
        o.next_pkid = u16::MAX - 1;
        o.sent(u16::MAX, 7);
        o.sent(1, 8);
        assert_eq!(o.next_pkid(), 2);
    }

    #[test]
    fn qos2_slot_stays_taken_until_pubcomp() {
        let mut o = Outgoing::new(1);
        let p = o.next_pkid();
        o.sent(p, 9);
        o.received(p);
        assert!(!o.has_room());
        assert_eq!(o.completed(p), Some(9));
        assert!(o.has_room());
    }
}
