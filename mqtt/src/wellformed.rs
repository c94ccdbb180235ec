//! The rules of the MQTT specifications that rumqttc's decoders let through, checked on a
//! whole frame's bytes before it is decoded (`codec.rs` calls [`check`]).
//!
//! - Fixed-header flags: PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry 0x2, every other
//!   packet but PUBLISH 0x0 (MQTT 3.1.1 2.2.2, MQTT 5 2.1.3): otherwise malformed.
//! - CONNECT's reserved flag (bit 0 of the connect flags) must be 0 (3.1.2-3): malformed.
//! - MQTT 5 properties: each must be one its packet may carry and lie inside the packet
//!   (malformed, 0x81, otherwise: a property length running past the end is an error, not
//!   a wait for more bytes); none but the user property may appear twice (protocol
//!   error, 0x82; 2.2.2.2); a client's PUBLISH must not carry a subscription identifier
//!   (3.3.4-6, protocol error), and a SUBSCRIBE's must not be 0 (3.8.2.1.2).
//! - MQTT 5 property values: Receive Maximum 0 (3.1.2-?: "It is a Protocol Error to
//!   include the Receive Maximum value of 0"), Maximum Packet Size 0, and a Payload
//!   Format Indicator, Request Problem / Response Information other than 0 or 1 are
//!   protocol errors (0x82);
//! - SUBSCRIBE options: reserved bits 0 (malformed), retain handling not 3 (protocol
//!   error).
//!
//! Nothing here allocates or panics on input: every read is bounds-checked.

use crate::error::Error;
use crate::packet::Version;

/// The fixed header of a complete frame at the start of `src`: (first byte, header
/// length, remaining length). `None` while incomplete.
pub(crate) fn frame(src: &[u8]) -> Option<(u8, usize, usize)> {
    let first = *src.first()?;
    let mut len = 0usize;
    for i in 0..4 {
        let b = *src.get(1 + i)?;
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((first, 2 + i, len));
        }
    }
    // A fifth length byte: rumqttc refuses it as malformed.
    None
}

/// Checks a whole frame (fixed header included) of a connection speaking `version`.
pub fn check(frame_bytes: &[u8], version: Version) -> Result<(), Error> {
    let Some((first, header, len)) = frame(frame_bytes) else {
        return Ok(());
    };
    let Some(body) = frame_bytes.get(header..header + len) else {
        return Ok(());
    };
    let kind = first >> 4;
    let flags = first & 0x0F;
    let want = match kind {
        3 => None,
        6 | 8 | 10 => Some(0x02),
        _ => Some(0x00),
    };
    if want.is_some_and(|w| w != flags) {
        return Err(malformed(format!(
            "packet type {kind} with fixed-header flags 0x{flags:02X}"
        )));
    }
    let mut r = Reader { b: body, at: 0 };
    match (kind, version) {
        (1, _) => connect(&mut r),
        (3, Version::V5) => {
            r.string()?;
            if (flags >> 1) & 0x03 != 0 {
                r.take(2)?;
            }
            let seen = properties(&mut r, PUBLISH_PROPS)?;
            if seen.has(SUBSCRIPTION_ID) {
                return Err(Error::Protocol(
                    "subscription identifier in a client PUBLISH",
                ));
            }
            Ok(())
        }
        (8, v) => subscribe(&mut r, v),
        (10, Version::V5) => {
            r.take(2)?;
            properties(&mut r, &[USER_PROPERTY]).map(drop)
        }
        (4..=7, Version::V5) if body.len() > 3 => {
            r.take(3)?;
            properties(&mut r, &[REASON_STRING, USER_PROPERTY]).map(drop)
        }
        (14, Version::V5) if body.len() > 1 => {
            r.take(1)?;
            properties(
                &mut r,
                &[
                    SESSION_EXPIRY,
                    REASON_STRING,
                    USER_PROPERTY,
                    SERVER_REFERENCE,
                ],
            )
            .map(drop)
        }
        _ => Ok(()),
    }
}

fn malformed(why: impl Into<String>) -> Error {
    Error::Malformed(why.into())
}

const PAYLOAD_FORMAT: u8 = 0x01;
const MESSAGE_EXPIRY: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_ID: u8 = 0x0B;
const SESSION_EXPIRY: u8 = 0x11;
const AUTH_METHOD: u8 = 0x15;
const AUTH_DATA: u8 = 0x16;
const REQUEST_PROBLEM: u8 = 0x17;
const WILL_DELAY: u8 = 0x18;
const REQUEST_RESPONSE: u8 = 0x19;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;

const PUBLISH_PROPS: &[u8] = &[
    PAYLOAD_FORMAT,
    MESSAGE_EXPIRY,
    TOPIC_ALIAS,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
    SUBSCRIPTION_ID,
    CONTENT_TYPE,
];
const CONNECT_PROPS: &[u8] = &[
    SESSION_EXPIRY,
    RECEIVE_MAXIMUM,
    MAXIMUM_PACKET_SIZE,
    TOPIC_ALIAS_MAXIMUM,
    REQUEST_RESPONSE,
    REQUEST_PROBLEM,
    USER_PROPERTY,
    AUTH_METHOD,
    AUTH_DATA,
];
const WILL_PROPS: &[u8] = &[
    WILL_DELAY,
    PAYLOAD_FORMAT,
    MESSAGE_EXPIRY,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
];

/// The value type of a property identifier, `None` for an unknown one.
fn value_kind(id: u8) -> Option<Kind> {
    Some(match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Kind::Byte,
        0x02 | 0x11 | 0x18 | 0x27 => Kind::Four,
        0x13 | 0x21 | 0x22 | 0x23 => Kind::Two,
        0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => Kind::Bytes,
        0x09 | 0x16 => Kind::Bytes,
        0x0B => Kind::VarInt,
        0x26 => Kind::Pair,
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Byte,
    Two,
    Four,
    VarInt,
    Bytes,
    Pair,
}

/// Property identifiers seen (all are below 0x80).
#[derive(Default)]
struct Seen(u128);

impl Seen {
    fn has(&self, id: u8) -> bool {
        id < 128 && self.0 & (1u128 << id) != 0
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(malformed("a field runs past the end of the packet"));
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn string(&mut self) -> Result<&'a [u8], Error> {
        let l = self.take(2)?;
        self.take(usize::from(u16::from_be_bytes([l[0], l[1]])))
    }

    fn varint(&mut self) -> Result<usize, Error> {
        let mut n = 0usize;
        for i in 0..4 {
            let b = self.byte()?;
            n |= usize::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(malformed("variable byte integer longer than 4 bytes"))
    }

    fn done(&self) -> bool {
        self.at >= self.b.len()
    }
}

/// Reads a property block (length + properties) allowed to hold `allowed`.
fn properties(r: &mut Reader<'_>, allowed: &[u8]) -> Result<Seen, Error> {
    let len = r.varint()?;
    let mut p = Reader {
        b: r.take(len)
            .map_err(|_| malformed("the property length runs past the end of the packet"))?,
        at: 0,
    };
    let mut seen = Seen::default();
    while !p.done() {
        let id = p.byte()?;
        let kind = value_kind(id)
            .filter(|_| allowed.contains(&id))
            .ok_or_else(|| malformed(format!("property 0x{id:02X} is not allowed here")))?;
        if id != USER_PROPERTY && seen.has(id) {
            return Err(Error::Protocol("a property appears twice"));
        }
        seen.0 |= 1u128 << id;
        match kind {
            Kind::Byte => {
                let v = p.byte()?;
                if matches!(id, PAYLOAD_FORMAT | REQUEST_PROBLEM | REQUEST_RESPONSE) && v > 1 {
                    return Err(Error::Protocol("a 0/1 property with another value"));
                }
            }
            Kind::Two => {
                let v = p.take(2)?;
                if id == RECEIVE_MAXIMUM && v == [0, 0] {
                    return Err(Error::Protocol("receive maximum of 0"));
                }
            }
            Kind::Four => {
                let v = p.take(4)?;
                if id == MAXIMUM_PACKET_SIZE && v == [0, 0, 0, 0] {
                    return Err(Error::Protocol("maximum packet size of 0"));
                }
            }
            Kind::VarInt => {
                if p.varint()? == 0 {
                    return Err(Error::Protocol("subscription identifier 0"));
                }
            }
            Kind::Bytes => drop(p.string()?),
            Kind::Pair => {
                p.string()?;
                p.string()?;
            }
        }
    }
    Ok(seen)
}

fn connect(r: &mut Reader<'_>) -> Result<(), Error> {
    r.string()?;
    let level = r.byte()?;
    let flags = r.byte()?;
    if flags & 0x01 != 0 {
        return Err(malformed("CONNECT's reserved flag is set"));
    }
    r.take(2)?;
    if level != 5 {
        return Ok(());
    }
    properties(r, CONNECT_PROPS)?;
    r.string()?;
    if flags & 0x04 != 0 {
        properties(r, WILL_PROPS)?;
    }
    Ok(())
}

fn subscribe(r: &mut Reader<'_>, version: Version) -> Result<(), Error> {
    r.take(2)?;
    if version == Version::V5 {
        properties(r, &[SUBSCRIPTION_ID, USER_PROPERTY])?;
    }
    while !r.done() {
        r.string()?;
        let options = r.byte()?;
        let reserved = match version {
            Version::V311 => 0xFC,
            Version::V5 => 0xC0,
        };
        if options & reserved != 0 {
            return Err(malformed("reserved bits of subscription options are set"));
        }
        if version == Version::V5 && (options >> 4) & 0x03 == 3 {
            return Err(Error::Protocol("retain handling 3"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(first: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![first, body.len() as u8];
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn subscribe_flags_must_be_two() {
        let body = [0, 1, 0, 1, b'a', 0];
        assert!(check(&framed(0x82, &body), Version::V311).is_ok());
        assert!(matches!(
            check(&framed(0x80, &body), Version::V311),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn publish_properties() {
        // topic "a", QoS 0, properties: message expiry twice.
        let dup = [0, 1, b'a', 10, 2, 0, 0, 0, 1, 2, 0, 0, 0, 1];
        assert!(matches!(
            check(&framed(0x30, &dup), Version::V5),
            Err(Error::Protocol(_))
        ));
        let sub_id = [0, 1, b'a', 2, 0x0B, 1];
        assert!(matches!(
            check(&framed(0x30, &sub_id), Version::V5),
            Err(Error::Protocol(_))
        ));
        let past_end = [0, 1, b'a', 100, 1, 1];
        assert!(matches!(
            check(&framed(0x30, &past_end), Version::V5),
            Err(Error::Malformed(_))
        ));
        let users = [0, 1, b'a', 10, 0x26, 0, 1, b'k', 0, 0, 0x26, 0, 0, 0, 0];
        assert!(check(&framed(0x30, &users[..users.len() - 4]), Version::V5).is_err());
        let users = [
            0, 1, b'a', 12, 0x26, 0, 1, b'k', 0, 0, 0x26, 0, 1, b'k', 0, 0,
        ];
        assert!(check(&framed(0x30, &users), Version::V5).is_ok());
    }

    #[test]
    fn connect_reserved_flag() {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 10, 0, 1, b'c'];
        assert!(matches!(
            check(&framed(0x10, &body), Version::V311),
            Err(Error::Malformed(_))
        ));
        body[7] = 0x02;
        assert!(check(&framed(0x10, &body), Version::V311).is_ok());
    }
}
