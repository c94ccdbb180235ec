//! What goes into the journal and what comes out of it.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::config::Priority;

/// MQTT quality of service of a journaled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Qos {
    /// QoS 0.
    AtMostOnce = 0,
    /// QoS 1.
    AtLeastOnce = 1,
    /// QoS 2.
    ExactlyOnce = 2,
}

impl Qos {
    /// The QoS with MQTT number `n`, if valid.
    pub fn from_u8(n: u8) -> Option<Qos> {
        match n {
            0 => Some(Qos::AtMostOnce),
            1 => Some(Qos::AtLeastOnce),
            2 => Some(Qos::ExactlyOnce),
            _ => None,
        }
    }

    /// The MQTT number.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A message to append. Priority and TTL come from the journal's rules unless given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Topic name (no wildcards).
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// QoS the device published with.
    pub qos: Qos,
    /// Retain flag of the publish.
    pub retain: bool,
    /// MQTT 5 user properties, in order.
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 message expiry interval from the publish; the entry expires at the earlier
    /// of this and the rule's TTL.
    pub message_expiry: Option<Duration>,
    /// Overrides the rule's priority class. Per-topic order in priority-first reads holds
    /// only while a topic always gets the same class, so leave this `None` normally.
    pub priority: Option<Priority>,
}

impl NewEntry {
    /// A message with no user properties, no expiry and the rule's priority.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>, qos: Qos) -> Self {
        NewEntry {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            user_properties: Vec::new(),
            message_expiry: None,
            priority: None,
        }
    }

    /// The bytes this entry counts against the quota: topic + payload + user properties.
    pub fn quota_bytes(&self) -> u64 {
        let props: usize = self
            .user_properties
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        (self.topic.len() + self.payload.len() + props) as u64
    }
}

/// A stored message, as handed to the uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Sequence number: increases with every append, never reused. With the gateway id it
    /// is the message's stable id.
    pub seq: u64,
    /// Topic name.
    pub topic: String,
    /// Payload bytes.
    #[serde(skip)]
    pub payload: Bytes,
    /// QoS the device published with.
    pub qos: Qos,
    /// Retain flag.
    pub retain: bool,
    /// Priority class.
    pub priority: Priority,
    /// When the journal received it (Unix ms).
    pub received_ms: u64,
    /// When it expires (Unix ms), if ever.
    pub expires_ms: Option<u64>,
    /// MQTT 5 user properties.
    pub user_properties: Vec<(String, String)>,
}

/// Order in which [`Journal::next_batch`](super::Journal::next_batch) hands out entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadOrder {
    /// Strict sequence order over all classes.
    #[default]
    Fifo,
    /// Highest class first, sequence order within a class.
    PriorityFirst,
}

/// Position of a reader in the journal; advance it past each entry handed out. A reader
/// that wants to see newly arrived higher-priority entries starts again from
/// [`Cursor::start`] (entries already in flight are then handed out again: skip them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    order: ReadOrder,
    /// Class and sequence number of the last entry handed out.
    last: Option<(Priority, u64)>,
}

impl Cursor {
    /// The beginning of the journal, in `order`.
    pub fn start(order: ReadOrder) -> Self {
        Cursor { order, last: None }
    }

    /// Strict FIFO, after sequence number `seq` (0 = from the beginning).
    pub fn fifo_after(seq: u64) -> Self {
        Cursor {
            order: ReadOrder::Fifo,
            last: (seq > 0).then_some((Priority::Critical, seq)),
        }
    }

    /// The read order.
    pub fn order(&self) -> ReadOrder {
        self.order
    }

    /// The last sequence number handed out (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last.map_or(0, |(_, s)| s)
    }

    /// The class of the last entry handed out.
    pub fn last_priority(&self) -> Option<Priority> {
        self.last.map(|(p, _)| p)
    }

    /// Moves the cursor past `entry`.
    pub fn advance(&mut self, entry: &Entry) {
        self.last = Some((entry.priority, entry.seq));
    }

    /// Moves the cursor past the last of `entries`, if any.
    pub fn advance_past(&mut self, entries: &[Entry]) {
        if let Some(e) = entries.last() {
            self.advance(e);
        }
    }
}
