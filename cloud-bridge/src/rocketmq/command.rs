//! The remoting command: one request or response, and its frame codec.
//!
//! Frame layout (all integers big-endian):
//!
//! ```text
//! [u32 length of everything after this field]
//! [u8 serialize type (0 = JSON)][u24 header length]
//! [header: JSON object][body: opaque bytes]
//! ```
//!
//! The header is `{"code","language","version","opaque","flag","remark","extFields",
//! "serializeTypeCurrentRPC"}`; `extFields` maps strings to strings and carries the request's
//! or response's custom header. Invariants kept by [`RemotingCodec`]:
//! - a frame longer than the configured maximum is an error before any of it is buffered;
//! - any malformed frame (bad lengths, unknown serialize type, bad JSON) is an
//!   [`Error::Frame`], never a panic, and the connection that read it is dropped;
//! - the body is handed out as a [`Bytes`] slice of the read buffer (no copy).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio_util::codec::{Decoder, Encoder};

use crate::Error;

/// Largest frame accepted by default: the Java server's default `frameMaxLength` (16 MiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
/// `flag` bit set on responses.
pub const FLAG_RESPONSE: i32 = 1;
/// `flag` bit set on one-way requests (no response expected).
pub const FLAG_ONEWAY: i32 = 1 << 1;
/// The `language` this client announces. The Java server parses it into its `LanguageCode`
/// enum, whose members differ between versions; `JAVA` is accepted by every version and
/// selects no special handling.
pub const LANGUAGE: &str = "JAVA";
/// The `version` this client announces: `MQVersion.CURRENT_VERSION` of the Java client 5.3.3
/// (`V5_3_3`), the version the tests run against. Servers only compare it against older
/// versions to enable newer features.
pub const VERSION: i32 = 479;
const SERIALIZE_JSON: u8 = 0;
const MAX_HEADER_LEN: usize = 0x00FF_FFFF;

/// Request codes (`RequestCode` of the Java code) used by this client.
pub mod request_code {
    /// Pull messages from a queue, optionally long-polling.
    pub const PULL_MESSAGE: i32 = 11;
    /// Read the committed offset of a consumer group in a queue.
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    /// Commit the offset of a consumer group in a queue.
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    /// Create or update a topic on one broker.
    pub const UPDATE_AND_CREATE_TOPIC: i32 = 17;
    /// The offset after the last message of a queue.
    pub const GET_MAX_OFFSET: i32 = 30;
    /// GET_BROKER_CONFIG: the broker's configuration as `key=value` lines.
    pub const GET_BROKER_CONFIG: i32 = 26;
    /// Delete a topic (an LMQ works: its consume queue and files go) on one broker.
    pub const DELETE_TOPIC_IN_BROKER: i32 = 215;
    /// The offset of the first message still stored in a queue.
    pub const GET_MIN_OFFSET: i32 = 31;
    /// The offset of the first message of a queue stored at or after a time.
    pub const SEARCH_OFFSET_BY_TIMESTAMP: i32 = 29;
    /// Name server: store a kvconfig entry.
    pub const PUT_KV_CONFIG: i32 = 100;
    /// Name server: read a kvconfig entry.
    pub const GET_KV_CONFIG: i32 = 101;
    /// Name server: delete a kvconfig entry.
    pub const DELETE_KV_CONFIG: i32 = 102;
    /// Name server: the route (brokers and queues) of a topic.
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    /// Name server: every cluster and broker it knows.
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    /// Name server: every kvconfig entry of a namespace.
    pub const GET_KVLIST_BY_NAMESPACE: i32 = 219;
    /// Send one message, with the abbreviated header `SendMessageRequestHeaderV2`.
    pub const SEND_MESSAGE_V2: i32 = 310;
}

/// Response codes (`ResponseCode` of the Java code) this client interprets.
pub mod response_code {
    /// Success.
    pub const SUCCESS: i32 = 0;
    /// Stored on the master, but the disk flush timed out.
    pub const FLUSH_DISK_TIMEOUT: i32 = 10;
    /// Stored on the master, but no slave is available.
    pub const SLAVE_NOT_AVAILABLE: i32 = 11;
    /// Stored on the master, but the slave did not confirm in time.
    pub const FLUSH_SLAVE_TIMEOUT: i32 = 12;
    /// The topic does not exist (name server route, or broker queue).
    pub const TOPIC_NOT_EXIST: i32 = 17;
    /// Pull: no new message (long poll ended without one).
    pub const PULL_NOT_FOUND: i32 = 19;
    /// Pull: messages exist but none matched the filter.
    pub const PULL_RETRY_IMMEDIATELY: i32 = 20;
    /// Pull: the requested offset is out of the queue's range.
    pub const PULL_OFFSET_MOVED: i32 = 21;
    /// Lookup found nothing (kvconfig entry, consumer offset).
    pub const QUERY_NOT_FOUND: i32 = 22;
}

/// The custom header of a command: string keys to string values, in insertion order.
///
/// A small vector rather than a map: headers have a handful of fields. Requests use
/// `&'static str` keys, and constant values are borrowed too, so building a request
/// allocates only its variable values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtFields(Vec<(Cow<'static, str>, Cow<'static, str>)>);

impl ExtFields {
    /// Adds a field. Lookups return the first field with a given key.
    pub fn push(&mut self, key: &'static str, value: impl Into<Cow<'static, str>>) {
        if self.0.capacity() == 0 {
            self.0.reserve(16);
        }
        self.0.push((Cow::Borrowed(key), value.into()));
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no field.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// All fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
}

impl Serialize for ExtFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ExtFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_option(ExtFieldsVisitor)
    }
}

struct ExtFieldsVisitor;

impl<'de> Visitor<'de> for ExtFieldsVisitor {
    type Value = ExtFields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of strings or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<ExtFields, E> {
        Ok(ExtFields::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<ExtFields, E> {
        Ok(ExtFields::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<ExtFields, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<ExtFields, A::Error> {
        let mut fields = Vec::with_capacity(access.size_hint().unwrap_or(8));
        while let Some((k, v)) = access.next_entry::<String, ScalarString>()? {
            if let Some(v) = v.0 {
                fields.push((Cow::Owned(k), Cow::Owned(v)));
            }
        }
        Ok(ExtFields(fields))
    }
}

/// A JSON scalar read as its string form (the Java side sends strings, but be lenient);
/// `null` reads as `None`.
struct ScalarString(Option<String>);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number, boolean or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarString, E> {
                Ok(ScalarString(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ScalarString, E> {
                Ok(ScalarString(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarString, E> {
                Ok(ScalarString(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarString, E> {
                Ok(ScalarString(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarString, E> {
                Ok(ScalarString(Some(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarString, E> {
                Ok(ScalarString(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ScalarString, E> {
                Ok(ScalarString(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// One remoting request or response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemotingCommand {
    /// Request code, or response code for responses (0 = success).
    pub code: i32,
    /// Version announced by the sender.
    pub version: i32,
    /// Correlation id: a response carries the opaque of its request.
    pub opaque: i32,
    /// Bit 0: response; bit 1: one-way request.
    pub flag: i32,
    /// Free-text explanation (mostly on errors).
    pub remark: Option<String>,
    /// The custom header.
    pub ext_fields: ExtFields,
    /// The body, possibly empty.
    pub body: Bytes,
}

impl RemotingCommand {
    /// A new request with the given code (the connection assigns the opaque).
    pub fn request(code: i32) -> Self {
        Self {
            code,
            version: VERSION,
            ..Self::default()
        }
    }

    /// Adds a custom header field.
    #[must_use]
    pub fn field(mut self, key: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        self.ext_fields.push(key, value);
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn with_body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }

    /// Whether this command is a response.
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Whether this command is a one-way request.
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// The value of a custom header field.
    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key)
    }

    /// A custom header field parsed as `T`: an [`Error::Protocol`] when absent or invalid.
    pub fn parse_ext<T: FromStr>(&self, key: &str) -> Result<T, Error> {
        let raw = self
            .ext(key)
            .ok_or_else(|| Error::Protocol(format!("response {} lacks field {key}", self.code)))?;
        raw.parse()
            .map_err(|_| Error::Protocol(format!("response field {key}={raw:?} is invalid")))
    }

    /// This response if its code is success, else an [`Error::Remoting`].
    pub fn into_success(self) -> Result<Self, Error> {
        if self.code == response_code::SUCCESS {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }

    /// The [`Error::Remoting`] this response stands for.
    pub fn into_error(self) -> Error {
        Error::Remoting {
            code: self.code,
            remark: self.remark.unwrap_or_default(),
        }
    }
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    code: i32,
    language: &'static str,
    version: i32,
    opaque: i32,
    flag: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<&'a str>,
    #[serde(rename = "extFields", skip_serializing_if = "ExtFields::is_empty")]
    ext_fields: &'a ExtFields,
    #[serde(rename = "serializeTypeCurrentRPC")]
    serialize_type: &'static str,
}

#[derive(Deserialize)]
struct HeaderIn {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    version: i32,
    #[serde(default)]
    opaque: i32,
    #[serde(default)]
    flag: i32,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default, rename = "extFields")]
    ext_fields: ExtFields,
}

/// Frame codec for [`RemotingCommand`]s, JSON header serialization only.
#[derive(Debug, Clone, Copy)]
pub struct RemotingCodec {
    max_frame_len: usize,
}

impl RemotingCodec {
    /// A codec that refuses frames longer than `max_frame_len` bytes (length field excluded).
    pub fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }
}

impl Default for RemotingCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder for RemotingCodec {
    type Item = RemotingCommand;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RemotingCommand>, Error> {
        let Some(len_bytes) = src.first_chunk::<4>() else {
            return Ok(None);
        };
        let total = u32::from_be_bytes(*len_bytes) as usize;
        if total < 4 || total > self.max_frame_len {
            return Err(Error::Frame(format!(
                "frame length {total} outside 4..={}",
                self.max_frame_len
            )));
        }
        if src.len() < 4 + total {
            src.reserve(4 + total - src.len());
            return Ok(None);
        }
        src.advance(4);
        let mut frame = src.split_to(total);
        let mark = frame.get_u32();
        let serialize_type = (mark >> 24) as u8;
        let header_len = (mark & 0x00FF_FFFF) as usize;
        if serialize_type != SERIALIZE_JSON {
            return Err(Error::Frame(format!(
                "serialize type {serialize_type} not supported (JSON only)"
            )));
        }
        if header_len > frame.len() {
            return Err(Error::Frame(format!(
                "header length {header_len} exceeds frame ({} bytes left)",
                frame.len()
            )));
        }
        let header = frame.split_to(header_len);
        let header: HeaderIn = serde_json::from_slice(&header)
            .map_err(|e| Error::Frame(format!("bad header JSON: {e}")))?;
        Ok(Some(RemotingCommand {
            code: header.code,
            version: header.version,
            opaque: header.opaque,
            flag: header.flag,
            remark: header.remark,
            ext_fields: header.ext_fields,
            body: frame.freeze(),
        }))
    }
}

impl Encoder<&RemotingCommand> for RemotingCodec {
    type Error = Error;

    fn encode(&mut self, cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), Error> {
        if cmd.body.len() > self.max_frame_len {
            return Err(Error::Frame(format!(
                "body of {} bytes exceeds the frame limit {}",
                cmd.body.len(),
                self.max_frame_len
            )));
        }
        let start = dst.len();
        dst.put_u64(0); // length and serialize mark, patched below
        let header = HeaderOut {
            code: cmd.code,
            language: LANGUAGE,
            version: cmd.version,
            opaque: cmd.opaque,
            flag: cmd.flag,
            remark: cmd.remark.as_deref(),
            ext_fields: &cmd.ext_fields,
            serialize_type: "JSON",
        };
        if let Err(e) = serde_json::to_writer((&mut *dst).writer(), &header) {
            dst.truncate(start);
            return Err(Error::Frame(format!("cannot encode header: {e}")));
        }
        let header_len = dst.len() - start - 8;
        let total = 4 + header_len + cmd.body.len();
        if header_len > MAX_HEADER_LEN || total > self.max_frame_len {
            dst.truncate(start);
            return Err(Error::Frame(format!(
                "frame of {total} bytes (header {header_len}) exceeds the limit {}",
                self.max_frame_len
            )));
        }
        dst.extend_from_slice(&cmd.body);
        let mark = (u32::from(SERIALIZE_JSON) << 24) | header_len as u32;
        dst[start..start + 4].copy_from_slice(&(total as u32).to_be_bytes());
        dst[start + 4..start + 8].copy_from_slice(&mark.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
