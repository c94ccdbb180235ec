//! Topic aliases, both directions (MQTT 5 3.3.2.3.4).
//!
//! Invariants:
//! - inbound: an alias is 1..=the server's Topic Alias Maximum (advertised in CONNACK);
//!   0 or above it is "Topic Alias invalid" (0x94, 3.3.2-8/9); a PUBLISH with an empty
//!   topic and an alias the connection never mapped is a protocol error (0x82, as
//!   mosquitto answers); an empty topic without an alias is a protocol error too; the
//!   table holds at most the maximum's entries;
//! - outbound: aliases are sent only to a client whose CONNECT allowed them (Topic Alias
//!   Maximum > 0), never above its maximum (3.3.2-10); a topic's first PUBLISH carries
//!   topic and alias, later ones an empty topic and the alias; once the client's
//!   maximum is used up, further topics go in full (no alias is ever re-mapped, so a
//!   client can never read a stale one); a mapping is recorded only once its PUBLISH
//!   was written.

use std::collections::HashMap;

use crate::packet::Reason;

/// Aliases the client set up.
#[derive(Debug)]
pub struct Inbound {
    max: u16,
    map: HashMap<u16, String>,
}

/// Why an inbound alias is refused: the reason code, and a text.
pub type Invalid = (Reason, &'static str);

impl Inbound {
    /// Accepts aliases 1..=`max` (0: none).
    pub fn new(max: u16) -> Self {
        Self {
            max,
            map: HashMap::new(),
        }
    }

    /// The topic of a client PUBLISH with `topic` and `alias`.
    pub fn resolve(&mut self, topic: String, alias: Option<u16>) -> Result<String, Invalid> {
        let Some(alias) = alias else {
            if topic.is_empty() {
                return Err((
                    Reason::ProtocolError,
                    "empty topic name without a topic alias",
                ));
            }
            return Ok(topic);
        };
        if alias == 0 || alias > self.max {
            return Err((
                Reason::TopicAliasInvalid,
                "topic alias 0 or above the topic alias maximum",
            ));
        }
        if topic.is_empty() {
            return self
                .map
                .get(&alias)
                .cloned()
                .ok_or((Reason::ProtocolError, "unknown topic alias"));
        }
        self.map.insert(alias, topic.clone());
        Ok(topic)
    }
}

/// Aliases the server set up with the client.
#[derive(Debug)]
pub struct Outbound {
    max: u16,
    map: HashMap<String, u16>,
}

/// How to send one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    /// No alias: the topic in full.
    None,
    /// Topic and a new alias: record it with [`Outbound::record`] once written.
    New(u16),
    /// An empty topic and this alias.
    Known(u16),
}

impl Outbound {
    /// Sends aliases 1..=`max` (the client's Topic Alias Maximum; 0: none).
    pub fn new(max: u16) -> Self {
        Self {
            max,
            map: HashMap::new(),
        }
    }

    /// How to send `topic`.
    pub fn lookup(&self, topic: &str) -> Use {
        if let Some(&a) = self.map.get(topic) {
            return Use::Known(a);
        }
        match u16::try_from(self.map.len() + 1) {
            Ok(next) if next <= self.max => Use::New(next),
            _ => Use::None,
        }
    }

    /// The PUBLISH setting up `alias` for `topic` was written.
    pub fn record(&mut self, topic: String, alias: u16) {
        if alias != 0 && alias <= self.max && self.map.len() < usize::from(self.max) {
            self.map.entry(topic).or_insert(alias);
        }
    }

    /// Aliases in use.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no alias is in use.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_alias_0_or_above_maximum_is_invalid_3_3_2_8_and_9() {
        let mut a = Inbound::new(10);
        assert_eq!(
            a.resolve("t".into(), Some(0)).map_err(|e| e.0),
            Err(Reason::TopicAliasInvalid)
        );
        assert_eq!(
            a.resolve("t".into(), Some(11)).map_err(|e| e.0),
            Err(Reason::TopicAliasInvalid)
        );
        assert_eq!(
            Inbound::new(0)
                .resolve("t".into(), Some(1))
                .map_err(|e| e.0),
            Err(Reason::TopicAliasInvalid)
        );
    }

    #[test]
    fn inbound_alias_maps_then_resolves_3_3_2_12() {
        let mut a = Inbound::new(10);
        assert_eq!(a.resolve("a/b".into(), Some(3)), Ok("a/b".to_owned()));
        assert_eq!(a.resolve(String::new(), Some(3)), Ok("a/b".to_owned()));
        assert_eq!(a.resolve("c".into(), Some(3)), Ok("c".to_owned()));
        assert_eq!(a.resolve(String::new(), Some(3)), Ok("c".to_owned()));
        assert_eq!(
            a.resolve(String::new(), Some(4)).map_err(|e| e.0),
            Err(Reason::ProtocolError)
        );
        assert_eq!(
            a.resolve(String::new(), None).map_err(|e| e.0),
            Err(Reason::ProtocolError)
        );
    }

    #[test]
    fn outbound_aliases_bounded_by_client_maximum_3_3_2_10() {
        let mut o = Outbound::new(2);
        assert_eq!(o.lookup("a"), Use::New(1));
        o.record("a".into(), 1);
        assert_eq!(o.lookup("a"), Use::Known(1));
        assert_eq!(o.lookup("b"), Use::New(2));
        o.record("b".into(), 2);
        assert_eq!(o.lookup("c"), Use::None);
        assert_eq!(o.len(), 2);
        assert_eq!(Outbound::new(0).lookup("a"), Use::None);
    }

    #[test]
    fn outbound_alias_not_recorded_until_written() {
        let o = Outbound::new(5);
        assert_eq!(o.lookup("a"), Use::New(1));
        assert_eq!(o.lookup("a"), Use::New(1));
        assert!(o.is_empty());
    }
}
