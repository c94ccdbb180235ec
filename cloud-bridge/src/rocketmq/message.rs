//! Messages: the property string, unique message ids, and the stored-message layout that
//! PULL_MESSAGE returns.
//!
//! Properties travel as one string `name\u{1}value\u{2}name\u{1}value\u{2}...`. Names and
//! values must be non-empty and free of U+0001 and U+0002 (the Java decoder silently drops
//! an entry with an empty name or value, so we refuse to write one), and the whole string
//! must fit in 32767 bytes.
//!
//! A PULL_MESSAGE body is a concatenation of stored messages, each (big-endian):
//!
//! ```text
//! i32 totalSize      i32 magicCode       i32 bodyCRC        i32 queueId
//! i32 flag           i64 queueOffset     i64 physicOffset   i32 sysFlag
//! i64 bornTimestamp  bornHost: 4|16 byte IP + i32 port   (16 when sysFlag bit 4)
//! i64 storeTimestamp storeHost: 4|16 byte IP + i32 port  (16 when sysFlag bit 5)
//! i32 reconsumeTimes i64 preparedTransactionOffset
//! i32 bodyLength + body        (compressed when sysFlag bit 0; type in sysFlag bits 8-10)
//! topicLength + topic          (1 byte with magic code V1, 2 bytes with magic code V2)
//! i16 propertiesLength + properties
//! ```
//!
//! Decoding never panics: a truncated or inconsistent message is an [`Error::Protocol`].
//! Bodies are zero-copy slices of the response unless they must be inflated (zlib).

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};

use crate::Error;

/// Well-known property names (`MessageConst` of the Java code).
pub mod property {
    /// The client-assigned unique message id.
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
    /// The message tag.
    pub const TAGS: &str = "TAGS";
    /// Space-separated index keys.
    pub const KEYS: &str = "KEYS";
    /// Comma-separated LMQ names the broker also dispatches the message to.
    pub const INNER_MULTI_DISPATCH: &str = "INNER_MULTI_DISPATCH";
    /// Set by the broker: the message's offset in each LMQ, in `INNER_MULTI_DISPATCH` order.
    pub const INNER_MULTI_QUEUE_OFFSET: &str = "INNER_MULTI_QUEUE_OFFSET";
}

const NAME_VALUE_SEPARATOR: char = '\u{1}';
const PROPERTY_SEPARATOR: char = '\u{2}';
const MAX_PROPERTIES_LEN: usize = i16::MAX as usize;
const MAGIC_CODE_V1: i32 = -626_843_481;
const MAGIC_CODE_V2: i32 = -626_843_477;
const SYSFLAG_COMPRESSED: i32 = 0x1;
const SYSFLAG_BORNHOST_V6: i32 = 0x1 << 4;
const SYSFLAG_STOREHOST_V6: i32 = 0x1 << 5;
const SYSFLAG_COMPRESSION_TYPE: i32 = 0x7 << 8;
const COMPRESSION_ZLIB: i32 = 3;
const MAX_INFLATED_BODY: u64 = 64 * 1024 * 1024;

/// Appends one `name\u{1}value\u{2}` entry to a property string, checking both parts.
pub fn push_property(buf: &mut String, name: &str, value: &str) -> Result<(), Error> {
    for part in [name, value] {
        if part.is_empty() || part.contains([NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR]) {
            return Err(Error::InvalidProperty(format!("{name:?}={value:?}")));
        }
    }
    if buf.len() + name.len() + value.len() + 2 > MAX_PROPERTIES_LEN {
        return Err(Error::InvalidProperty(format!(
            "properties longer than {MAX_PROPERTIES_LEN} bytes"
        )));
    }
    buf.reserve(name.len() + value.len() + 2);
    buf.push_str(name);
    buf.push(NAME_VALUE_SEPARATOR);
    buf.push_str(value);
    buf.push(PROPERTY_SEPARATOR);
    Ok(())
}

/// Encodes properties into the wire string.
pub fn encode_properties<'a>(
    properties: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, Error> {
    let mut buf = String::new();
    for (name, value) in properties {
        push_property(&mut buf, name, value)?;
    }
    Ok(buf)
}

/// Decodes a property string exactly as the Java `string2messageProperties`: entries
/// without a separator, or with an empty name or value, are skipped.
pub fn decode_properties(s: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for entry in s.split(PROPERTY_SEPARATOR) {
        if let Some((name, value)) = entry.split_once(NAME_VALUE_SEPARATOR)
            && !name.is_empty()
            && !value.is_empty()
        {
            map.insert(name.to_owned(), value.to_owned());
        }
    }
    map
}

/// The value of property `name` in an encoded property string, without decoding it all.
pub fn find_property<'a>(properties: &'a str, name: &str) -> Option<&'a str> {
    properties
        .split(PROPERTY_SEPARATOR)
        .filter_map(|entry| entry.split_once(NAME_VALUE_SEPARATOR))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v)
}

/// A new unique message id: 32 upper-case hex digits, like the Java client's
/// `MessageClientIDSetter` (8 bytes identifying this process, 4 bytes of Unix time in
/// seconds, 4 bytes of a process-wide counter).
pub fn new_unique_id() -> String {
    let mut id = String::with_capacity(32);
    push_unique_id(&mut id);
    id
}

/// Appends a new unique message id (see [`new_unique_id`]) to `buf`.
pub fn push_unique_id(buf: &mut String) {
    static PREFIX: OnceLock<[u8; 8]> = OnceLock::new();
    static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let mut p = [0u8; 8];
        p[..2].copy_from_slice(&(std::process::id() as u16).to_be_bytes());
        p[2..].copy_from_slice(&rand::random::<[u8; 6]>());
        p
    });
    let counter = COUNTER.get_or_init(|| AtomicU32::new(rand::random()));
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let count = counter.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(prefix);
    bytes[8..12].copy_from_slice(&secs.to_be_bytes());
    bytes[12..].copy_from_slice(&count.to_be_bytes());
    for b in bytes {
        buf.push(char::from(HEX[usize::from(b >> 4)]));
        buf.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// One stored message, as pulled from a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The queue's topic (for an LMQ pull: the first-level topic the message was sent to).
    pub topic: String,
    /// The queue id in that topic.
    pub queue_id: i32,
    /// Offset in that topic's queue (not the LMQ's: see [`Message::lmq_offset`]).
    pub queue_offset: i64,
    /// Offset in the broker's commit log.
    pub commit_log_offset: i64,
    /// System flags (compression, transaction state, IPv6 hosts).
    pub sys_flag: i32,
    /// The user flag set by the producer.
    pub flag: i32,
    /// CRC32 of the stored body.
    pub body_crc: i32,
    /// When the producer created it, ms since the Unix epoch.
    pub born_timestamp: i64,
    /// The producer's address.
    pub born_host: SocketAddr,
    /// When the broker stored it, ms since the Unix epoch.
    pub store_timestamp: i64,
    /// The broker's address.
    pub store_host: SocketAddr,
    /// Redelivery count.
    pub reconsume_times: i32,
    /// Transaction bookkeeping.
    pub prepared_transaction_offset: i64,
    /// The payload (inflated when it was stored compressed).
    pub body: Bytes,
    /// User and system properties.
    pub properties: HashMap<String, String>,
}

impl Message {
    /// The client-assigned unique id (the `UNIQ_KEY` property).
    pub fn msg_id(&self) -> Option<&str> {
        self.property(property::UNIQ_KEY)
    }

    /// A property's value.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    /// The broker-side id (`offsetMsgId` in Java): store host and commit log offset in hex.
    pub fn offset_msg_id(&self) -> String {
        let mut raw = Vec::with_capacity(28);
        match self.store_host.ip() {
            IpAddr::V4(ip) => raw.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => raw.extend_from_slice(&ip.octets()),
        }
        raw.extend_from_slice(&u32::from(self.store_host.port()).to_be_bytes());
        raw.extend_from_slice(&self.commit_log_offset.to_be_bytes());
        raw.iter().map(|b| format!("{b:02X}")).collect()
    }

    /// The message's offset in the LMQ `lmq`: the entry of `INNER_MULTI_QUEUE_OFFSET` at
    /// the position of `lmq` in `INNER_MULTI_DISPATCH`.
    pub fn lmq_offset(&self, lmq: &str) -> Option<i64> {
        let index = self
            .property(property::INNER_MULTI_DISPATCH)?
            .split(',')
            .position(|name| name == lmq)?;
        self.property(property::INNER_MULTI_QUEUE_OFFSET)?
            .split(',')
            .nth(index)?
            .trim()
            .parse()
            .ok()
    }
}

/// Decodes every message of a PULL_MESSAGE response body.
pub fn decode_messages(body: &Bytes) -> Result<Vec<Message>, Error> {
    let mut messages = Vec::new();
    let mut rest = body.clone();
    while !rest.is_empty() {
        let total = Reader::new(&rest).i32()?;
        let total = usize::try_from(total)
            .ok()
            .filter(|t| *t >= 4 && *t <= rest.len())
            .ok_or_else(|| truncated("message size"))?;
        let one = rest.split_to(total);
        messages.push(decode_message(&one)?);
    }
    Ok(messages)
}

/// Decodes one stored message (exactly `totalSize` bytes).
pub fn decode_message(data: &Bytes) -> Result<Message, Error> {
    let mut r = Reader::new(data);
    let _total = r.i32()?;
    let magic = r.i32()?;
    let topic_len_size = match magic {
        MAGIC_CODE_V1 => 1,
        MAGIC_CODE_V2 => 2,
        other => {
            return Err(Error::Protocol(format!(
                "unknown message magic code {other:#x}"
            )));
        }
    };
    let body_crc = r.i32()?;
    let queue_id = r.i32()?;
    let flag = r.i32()?;
    let queue_offset = r.i64()?;
    let commit_log_offset = r.i64()?;
    let sys_flag = r.i32()?;
    let born_timestamp = r.i64()?;
    let born_host = r.host(sys_flag & SYSFLAG_BORNHOST_V6 != 0)?;
    let store_timestamp = r.i64()?;
    let store_host = r.host(sys_flag & SYSFLAG_STOREHOST_V6 != 0)?;
    let reconsume_times = r.i32()?;
    let prepared_transaction_offset = r.i64()?;
    let body_len = usize::try_from(r.i32()?).map_err(|_| truncated("body length"))?;
    let mut body = r.bytes(body_len)?;
    if sys_flag & SYSFLAG_COMPRESSED != 0 {
        body = inflate(&body, sys_flag)?;
    }
    let topic_len = if topic_len_size == 1 {
        usize::from(r.u8()?)
    } else {
        usize::from(r.u16()?)
    };
    let topic = r.string(topic_len)?;
    let properties_len = usize::from(r.u16()?);
    let properties = decode_properties(&r.string(properties_len)?);
    Ok(Message {
        topic,
        queue_id,
        queue_offset,
        commit_log_offset,
        sys_flag,
        flag,
        body_crc,
        born_timestamp,
        born_host,
        store_timestamp,
        store_host,
        reconsume_times,
        prepared_transaction_offset,
        body,
        properties,
    })
}

fn inflate(body: &Bytes, sys_flag: i32) -> Result<Bytes, Error> {
    let kind = (sys_flag & SYSFLAG_COMPRESSION_TYPE) >> 8;
    // Type 0 is what Java clients older than 5.x wrote: zlib.
    if kind != 0 && kind != COMPRESSION_ZLIB {
        return Err(Error::Protocol(format!(
            "message body compressed with unsupported type {kind} (only zlib)"
        )));
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4));
    flate2::read::ZlibDecoder::new(&body[..])
        .take(MAX_INFLATED_BODY)
        .read_to_end(&mut out)
        .map_err(|e| Error::Protocol(format!("cannot inflate message body: {e}")))?;
    Ok(Bytes::from(out))
}

fn truncated(what: &str) -> Error {
    Error::Protocol(format!("truncated or inconsistent message ({what})"))
}

/// A bounds-checked cursor over a message.
struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a Bytes) -> Self {
        Self { data, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| truncated("field past the end"))?;
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        Ok(self.take(2)?.get_u16())
    }

    fn i32(&mut self) -> Result<i32, Error> {
        Ok(self.take(4)?.get_i32())
    }

    fn i64(&mut self) -> Result<i64, Error> {
        Ok(self.take(8)?.get_i64())
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, Error> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.data.slice(start..start + n))
    }

    fn string(&mut self, n: usize) -> Result<String, Error> {
        let raw = self.take(n)?;
        Ok(String::from_utf8_lossy(raw).into_owned())
    }

    fn host(&mut self, v6: bool) -> Result<SocketAddr, Error> {
        let ip = if v6 {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(self.take(16)?);
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            let mut octets = [0u8; 4];
            octets.copy_from_slice(self.take(4)?);
            IpAddr::V4(Ipv4Addr::from(octets))
        };
        let port = self.i32()?;
        Ok(SocketAddr::new(ip, port as u16))
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
