//! The client's QoS 1/2 publishes: being stored, and (QoS 2) stored and awaiting PUBREL.
//!
//! Invariants:
//! - a packet identifier is in at most one of the two sets;
//! - a QoS 2 publish is stored once per packet identifier until its PUBREL: a
//!   retransmission while it is stored (awaiting PUBREL) is acknowledged again without
//!   a store, and one while it is still being stored is ignored (its ack follows);
//! - an acknowledgement (PUBACK/PUBREC with success) is sent only for a publish whose
//!   store completed: [`Incoming::stored`] is the only way into `awaiting_rel`;
//! - under MQTT 5, a new QoS 1/2 publish beyond the server's Receive Maximum
//!   unacknowledged ones is refused (DISCONNECT 0x93, 3.3.4-8 / 4.9): this bounds both
//!   sets. 3.1.1 has no Receive Maximum; its sets are bounded by the 65535 packet ids.

use std::collections::HashSet;

use crate::packet::QoS;

/// What to do with a client's PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Store it (QoS 0, or a new QoS 1/2 packet id).
    Store,
    /// A QoS 2 retransmission of a publish stored already: answer PUBREC again, in
    /// order with the other acks, and do not store it.
    AckAgain,
    /// A retransmission of a publish still being stored: nothing to do.
    InProgress,
    /// More unacknowledged QoS 1/2 publishes than the server's Receive Maximum.
    TooMany,
}

/// The incoming QoS 1/2 tables.
#[derive(Debug)]
pub struct Incoming {
    storing: HashSet<u16>,
    awaiting_rel: HashSet<u16>,
    /// Server's Receive Maximum, enforced when `Some` (MQTT 5).
    limit: Option<usize>,
}

impl Incoming {
    /// Tables enforcing `receive_maximum` when given (MQTT 5 clients).
    pub fn new(receive_maximum: Option<u16>) -> Self {
        Self {
            storing: HashSet::new(),
            awaiting_rel: HashSet::new(),
            limit: receive_maximum.map(|m| usize::from(m.max(1))),
        }
    }

    /// A PUBLISH arrived with this packet id and QoS.
    pub fn publish(&mut self, pkid: u16, qos: QoS) -> Received {
        if qos == QoS::AtMostOnce {
            return Received::Store;
        }
        if self.storing.contains(&pkid) {
            return Received::InProgress;
        }
        if qos == QoS::ExactlyOnce && self.awaiting_rel.remove(&pkid) {
            // Moves back to `storing` until its (immediate) ack goes out in order.
            self.storing.insert(pkid);
            return Received::AckAgain;
        }
        if self
            .limit
            .is_some_and(|l| self.storing.len() + self.awaiting_rel.len() >= l)
        {
            return Received::TooMany;
        }
        self.storing.insert(pkid);
        Received::Store
    }

    /// The store of `pkid` completed (`ok`: stored, so an ack may go). Returns whether
    /// the publish was one being stored.
    pub fn stored(&mut self, pkid: u16, qos: QoS, ok: bool) -> bool {
        if qos == QoS::AtMostOnce {
            return true;
        }
        let was = self.storing.remove(&pkid);
        if was && ok && qos == QoS::ExactlyOnce {
            self.awaiting_rel.insert(pkid);
        }
        was
    }

    /// PUBREL: the QoS 2 exchange of `pkid` ends (PUBCOMP is sent whatever the state).
    pub fn released(&mut self, pkid: u16) {
        self.awaiting_rel.remove(&pkid);
    }

    /// Whether `pkid` was stored and waits for PUBREL.
    pub fn awaiting_rel(&self, pkid: u16) -> bool {
        self.awaiting_rel.contains(&pkid)
    }

    /// Whether `pkid` is being stored.
    pub fn storing(&self, pkid: u16) -> bool {
        self.storing.contains(&pkid)
    }

    /// Unacknowledged QoS 1/2 publishes (being stored or awaiting PUBREL).
    pub fn len(&self) -> usize {
        self.storing.len() + self.awaiting_rel.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos2_dup_awaiting_pubrel_is_acked_not_stored_4_3_3() {
        let mut i = Incoming::new(None);
        assert_eq!(i.publish(5, QoS::ExactlyOnce), Received::Store);
        assert_eq!(i.publish(5, QoS::ExactlyOnce), Received::InProgress);
        assert!(i.stored(5, QoS::ExactlyOnce, true));
        assert!(i.awaiting_rel(5));
        assert_eq!(i.publish(5, QoS::ExactlyOnce), Received::AckAgain);
        assert!(i.stored(5, QoS::ExactlyOnce, true));
        i.released(5);
        assert_eq!(i.publish(5, QoS::ExactlyOnce), Received::Store);
    }

    #[test]
    fn refused_store_is_not_awaiting_pubrel() {
        let mut i = Incoming::new(None);
        assert_eq!(i.publish(1, QoS::ExactlyOnce), Received::Store);
        i.stored(1, QoS::ExactlyOnce, false);
        assert!(!i.awaiting_rel(1));
        assert!(i.is_empty());
    }

    #[test]
    fn server_receive_maximum_is_enforced_for_v5_3_3_4_8() {
        let mut i = Incoming::new(Some(2));
        assert_eq!(i.publish(1, QoS::AtLeastOnce), Received::Store);
        assert_eq!(i.publish(2, QoS::ExactlyOnce), Received::Store);
        assert_eq!(i.publish(3, QoS::AtLeastOnce), Received::TooMany);
        assert_eq!(i.publish(4, QoS::AtMostOnce), Received::Store);
        i.stored(1, QoS::AtLeastOnce, true);
        assert_eq!(i.publish(3, QoS::AtLeastOnce), Received::Store);
    }
}
