//! Framing: bytes on the wire <-> [`Inbound`] / [`Outbound`].
//!
//! The packet encoders and decoders are rumqttc's (`rumqttc::mqttbytes::v4` for 3.1.1 and
//! `rumqttc::v5::mqttbytes::v5` for 5), a maintained codec used by rumqttc and rumqttd; this
//! module only frames them for tokio and maps both versions onto the neutral types of
//! `packet.rs`. The protocol level is read from the first CONNECT before it is decoded, so a
//! connection speaks exactly one version from its first packet on.
//!
//! Invariants: a frame larger than `max_packet_size` is refused from its fixed header,
//! before its body is buffered; a whole frame passes `wellformed::check` (the spec's
//! rules rumqttc does not enforce) before it is decoded; any decoding error ends the connection (the caller sends a
//! DISCONNECT where MQTT 5 allows one); nothing here panics on input.

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;
use crate::packet::{
    Connect, Inbound, Message, MessageProperties, Outbound, Reason, SubscribeOutcome,
    SubscriptionRequest, Version, Will,
};
use crate::reason_codes::{
    qos_from_v4, qos_from_v5, qos_to_v4, qos_to_v5, v4_connect_code, v5_connect_code,
    v5_disconnect_reason, v5_puback_reason, v5_pubrec_reason, v5_suback_code, v5_unsuback_reason,
};

/// Smallest maximum packet size we accept in configuration.
pub const MIN_PACKET_SIZE: usize = 64;

/// A tokio codec for the server side of one MQTT connection.
#[derive(Debug)]
pub struct Codec {
    version: Option<Version>,
    max_packet_size: usize,
    /// Largest packet the client accepts (MQTT 5 CONNECT property).
    pub client_max_packet_size: Option<u32>,
    /// MQTT 5 Request Problem Information (CONNECT property, default 1): with 0, no
    /// reason string goes out on packets other than PUBLISH, CONNACK and DISCONNECT
    /// (3.1.2-29).
    problem_information: bool,
}

impl Codec {
    /// A codec that has not yet seen CONNECT and refuses frames over `max_packet_size` bytes.
    pub fn new(max_packet_size: usize) -> Self {
        Self {
            version: None,
            max_packet_size: max_packet_size.max(MIN_PACKET_SIZE),
            client_max_packet_size: None,
            problem_information: true,
        }
    }

    /// The protocol version, once CONNECT was seen.
    pub fn version(&self) -> Option<Version> {
        self.version
    }
}

/// Reads the protocol level of a CONNECT at the start of `src`, if enough bytes are there.
fn peek_version(src: &[u8]) -> Result<Option<Version>, Error> {
    let Some(&first) = src.first() else {
        return Ok(None);
    };
    if first != 0x10 {
        return Err(Error::Protocol("the first packet must be CONNECT"));
    }
    // Remaining length: 1 to 4 bytes.
    let mut pos = 1;
    loop {
        let Some(&b) = src.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        if b & 0x80 == 0 {
            break;
        }
        if pos > 4 {
            return Err(Error::Malformed("remaining length".into()));
        }
    }
    // Protocol name (2-byte length + name) then the level byte.
    let Some(name_len) = src.get(pos..pos + 2) else {
        return Ok(None);
    };
    let name_len = u16::from_be_bytes([name_len[0], name_len[1]]) as usize;
    let level_at = pos + 2 + name_len;
    let Some(&level) = src.get(level_at) else {
        return Ok(None);
    };
    match (&src[pos + 2..level_at], level) {
        (b"MQTT", 4) => Ok(Some(Version::V311)),
        (b"MQTT", 5) => Ok(Some(Version::V5)),
        _ => Err(Error::UnsupportedProtocol(level)),
    }
}

impl Decoder for Codec {
    type Item = Inbound;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, Error> {
        if src.is_empty() {
            return Ok(None);
        }
        let version = match self.version {
            Some(v) => v,
            None => match peek_version(src)? {
                Some(v) => v,
                None => {
                    if src.len() > self.max_packet_size {
                        return Err(Error::PacketTooLarge(src.len()));
                    }
                    return Ok(None);
                }
            },
        };
        if let Some((_, header, len)) = crate::wellformed::frame(src)
            && header + len <= src.len()
            && len <= self.max_packet_size
            && let Err(e) = crate::wellformed::check(&src[..header + len], version)
        {
            // A refused CONNECT is answered in its own version (MQTT 5: CONNACK 0x81/0x82).
            self.version.get_or_insert(version);
            return Err(e);
        }
        let decoded = match version {
            Version::V311 => match v4::Packet::read(src, self.max_packet_size) {
                Ok(p) => from_v4(p).map(Some),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
                Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n)) => {
                    Err(Error::PacketTooLarge(n))
                }
                Err(e) => Err(Error::Malformed(e.to_string())),
            },
            Version::V5 => match v5::Packet::read(src, Some(self.max_packet_size as u32)) {
                Ok(p) => {
                    if let v5::Packet::Connect(c, _, _) = &p {
                        self.problem_information =
                            c.properties.as_ref().and_then(|p| p.request_problem_info) != Some(0);
                    }
                    from_v5(p).map(Some)
                }
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
                Err(rumqttc::v5::mqttbytes::Error::PayloadSizeLimitExceeded {
                    pkt_size, ..
                }) => Err(Error::PacketTooLarge(pkt_size)),
                Err(e) => Err(Error::Malformed(e.to_string())),
            },
        }?;
        if let Some(Inbound::Connect(c)) = &decoded {
            self.version = Some(version);
            self.client_max_packet_size = c.maximum_packet_size;
        }
        Ok(decoded)
    }
}

fn topic_string(raw: bytes::Bytes) -> Result<String, Error> {
    String::from_utf8(raw.to_vec()).map_err(|_| Error::Malformed("topic is not UTF-8".into()))
}

fn from_v4(p: v4::Packet) -> Result<Inbound, Error> {
    Ok(match p {
        v4::Packet::Connect(c) => Inbound::Connect(Box::new(Connect {
            version: Version::V311,
            session_expiry_interval: if c.clean_session { 0 } else { u32::MAX },
            client_id: c.client_id,
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            username: c.login.as_ref().map(|l| l.username.clone()),
            password: c.login.map(|l| l.password),
            will: c.last_will.map(|w| Will {
                message: Message {
                    topic: w.topic,
                    payload: w.message,
                    qos: qos_from_v4(w.qos),
                    retain: w.retain,
                    properties: MessageProperties::default(),
                },
                delay_interval: 0,
            }),
            receive_maximum: u16::MAX,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
        })),
        v4::Packet::Publish(p) => Inbound::Publish {
            pkid: p.pkid,
            dup: p.dup,
            message: Message {
                topic: p.topic,
                payload: p.payload,
                qos: qos_from_v4(p.qos),
                retain: p.retain,
                properties: MessageProperties::default(),
            },
            topic_alias: None,
        },
        v4::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v4::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v4::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v4::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            subscriptions: s
                .filters
                .into_iter()
                .map(|f| SubscriptionRequest {
                    filter: f.path,
                    qos: qos_from_v4(f.qos),
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                    subscription_id: None,
                })
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect {
            reason: 0,
            session_expiry_interval: None,
        },
        v4::Packet::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        v4::Packet::SubAck(_) => Inbound::Unexpected("SUBACK"),
        v4::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v4::Packet::PingResp => Inbound::Unexpected("PINGRESP"),
    })
}

fn props_from_v5(
    p: Option<v5::PublishProperties>,
) -> Result<(MessageProperties, Option<u16>), Error> {
    let Some(p) = p else {
        return Ok((MessageProperties::default(), None));
    };
    Ok((
        MessageProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
        },
        p.topic_alias,
    ))
}

fn from_v5(p: v5::Packet) -> Result<Inbound, Error> {
    Ok(match p {
        v5::Packet::Connect(c, will, login) => {
            let (session_expiry, receive_maximum, max_packet_size, topic_alias_max) =
                match &c.properties {
                    Some(p) => (
                        p.session_expiry_interval,
                        p.receive_maximum,
                        p.max_packet_size,
                        p.topic_alias_max,
                    ),
                    None => (None, None, None, None),
                };
            let will = match will {
                Some(w) => {
                    let (properties, delay) = match w.properties {
                        Some(wp) => (
                            MessageProperties {
                                payload_format_indicator: wp.payload_format_indicator,
                                message_expiry_interval: wp.message_expiry_interval,
                                content_type: wp.content_type,
                                response_topic: wp.response_topic,
                                correlation_data: wp.correlation_data,
                                user_properties: wp.user_properties,
                            },
                            wp.delay_interval.unwrap_or(0),
                        ),
                        None => (MessageProperties::default(), 0),
                    };
                    Some(Will {
                        message: Message {
                            topic: topic_string(w.topic)?,
                            payload: w.message,
                            qos: qos_from_v5(w.qos),
                            retain: w.retain,
                            properties,
                        },
                        delay_interval: delay,
                    })
                }
                None => None,
            };
            if receive_maximum == Some(0) {
                return Err(Error::Protocol("receive maximum of 0"));
            }
            Inbound::Connect(Box::new(Connect {
                version: Version::V5,
                client_id: c.client_id,
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                username: login.as_ref().map(|l| l.username.clone()),
                password: login.map(|l| l.password),
                will,
                session_expiry_interval: session_expiry.unwrap_or(0),
                receive_maximum: receive_maximum.unwrap_or(u16::MAX),
                maximum_packet_size: max_packet_size,
                topic_alias_maximum: topic_alias_max.unwrap_or(0),
            }))
        }
        v5::Packet::Publish(p) => {
            let (properties, topic_alias) = props_from_v5(p.properties)?;
            Inbound::Publish {
                pkid: p.pkid,
                dup: p.dup,
                message: Message {
                    topic: topic_string(p.topic)?,
                    payload: p.payload,
                    qos: qos_from_v5(p.qos),
                    retain: p.retain,
                    properties,
                },
                topic_alias,
            }
        }
        v5::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v5::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v5::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v5::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v5::Packet::Subscribe(s) => {
            let subscription_id = s
                .properties
                .as_ref()
                .and_then(|p| p.id)
                .and_then(|id| u32::try_from(id).ok());
            Inbound::Subscribe {
                pkid: s.pkid,
                subscriptions: s
                    .filters
                    .into_iter()
                    .map(|f| SubscriptionRequest {
                        filter: f.path,
                        qos: qos_from_v5(f.qos),
                        no_local: f.nolocal,
                        retain_as_published: f.preserve_retain,
                        retain_handling: match f.retain_forward_rule {
                            v5::RetainForwardRule::OnEverySubscribe => 0,
                            v5::RetainForwardRule::OnNewSubscribe => 1,
                            v5::RetainForwardRule::Never => 2,
                        },
                        subscription_id,
                    })
                    .collect(),
            }
        }
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            reason: d.reason_code as u8,
            session_expiry_interval: d.properties.and_then(|p| p.session_expiry_interval),
        },
        v5::Packet::Auth(_) => Inbound::Unexpected("AUTH"),
        v5::Packet::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        v5::Packet::SubAck(_) => Inbound::Unexpected("SUBACK"),
        v5::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v5::Packet::PingResp(_) => Inbound::Unexpected("PINGRESP"),
    })
}

impl Encoder<Outbound> for Codec {
    type Error = Error;

    fn encode(&mut self, item: Outbound, dst: &mut BytesMut) -> Result<(), Error> {
        // Before CONNECT was decoded (a refused CONNECT of an unknown level) we answer 3.1.1.
        match self.version.unwrap_or(Version::V311) {
            Version::V311 => {
                let Some(p) = to_v4(item) else {
                    return Ok(());
                };
                p.write(dst, usize::MAX)
                    .map_err(|e| Error::Malformed(e.to_string()))?;
            }
            Version::V5 => {
                let max = self.client_max_packet_size.map(|m| m as usize);
                let start = dst.len();
                if let Outbound::Disconnect {
                    reason,
                    reason_string,
                } = item
                {
                    write_v5_disconnect(reason, reason_string.as_deref(), dst);
                    if max.is_some_and(|m| dst.len() - start > m) {
                        // 3.1.2-25: the reason string may be left out to fit.
                        dst.truncate(start);
                        write_v5_disconnect(reason, None, dst);
                    }
                    return Ok(());
                }
                let mut p = to_v5(item);
                if !self.problem_information
                    && !matches!(p, v5::Packet::Publish(_) | v5::Packet::ConnAck(_))
                {
                    p = without_reason_string(p);
                }
                if let (v5::Packet::Publish(publish), Some(max)) = (&p, max)
                    && publish.size() > max
                {
                    return Err(Error::TooLargeForClient(publish.size()));
                }
                p.write(dst, None)
                    .map_err(|e| Error::Malformed(e.to_string()))?;
                if let Some(max) = max
                    && dst.len() - start > max
                {
                    // MQTT 5 3.1.2-24/25: never a packet over the client's maximum; the
                    // reason string (the only optional part we send) is dropped to fit.
                    dst.truncate(start);
                    without_reason_string(p)
                        .write(dst, None)
                        .map_err(|e| Error::Malformed(e.to_string()))?;
                    let size = dst.len() - start;
                    if size > max {
                        dst.truncate(start);
                        return Err(Error::TooLargeForClient(size));
                    }
                }
            }
        }
        Ok(())
    }
}

/// 3.1.1 has no reason codes on acks and no server DISCONNECT: those become `None` or a
/// plain ack (the caller closes the connection where 3.1.1 says so).
fn to_v4(item: Outbound) -> Option<v4::Packet> {
    Some(match item {
        Outbound::ConnAck {
            session_present,
            reason,
            ..
        } => v4::Packet::ConnAck(v4::ConnAck::new(
            v4_connect_code(reason),
            session_present && reason == Reason::Success,
        )),
        Outbound::Publish {
            pkid, dup, message, ..
        } => v4::Packet::Publish(v4::Publish {
            dup,
            qos: qos_to_v4(message.qos),
            retain: message.retain,
            topic: message.topic,
            pkid,
            payload: message.payload,
        }),
        Outbound::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(pkid)),
        Outbound::PubRec { pkid, .. } => v4::Packet::PubRec(v4::PubRec::new(pkid)),
        Outbound::PubRel(pkid) => v4::Packet::PubRel(v4::PubRel::new(pkid)),
        Outbound::PubComp(pkid) => v4::Packet::PubComp(v4::PubComp::new(pkid)),
        Outbound::SubAck { pkid, outcomes, .. } => v4::Packet::SubAck(v4::SubAck::new(
            pkid,
            outcomes
                .into_iter()
                .map(|o| match o {
                    SubscribeOutcome::Granted(q) => v4::SubscribeReasonCode::Success(qos_to_v4(q)),
                    SubscribeOutcome::Refused(_) => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Outbound::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)),
        Outbound::PingResp => v4::Packet::PingResp,
        Outbound::Disconnect { .. } => return None,
    })
}

/// The packet without its reason string (MQTT 5 3.1.2-25 allows leaving it out).
fn without_reason_string(p: v5::Packet) -> v5::Packet {
    match p {
        v5::Packet::ConnAck(mut c) => {
            if let Some(props) = &mut c.properties {
                props.reason_string = None;
            }
            v5::Packet::ConnAck(c)
        }
        v5::Packet::PubAck(mut a) => {
            a.properties = None;
            v5::Packet::PubAck(a)
        }
        v5::Packet::PubRec(mut a) => {
            a.properties = None;
            v5::Packet::PubRec(a)
        }
        v5::Packet::SubAck(mut a) => {
            a.properties = None;
            v5::Packet::SubAck(a)
        }
        other => other,
    }
}

fn reason_props<T>(s: Option<String>, f: impl FnOnce(String) -> T) -> Option<T> {
    s.map(f)
}

fn to_v5(item: Outbound) -> v5::Packet {
    match item {
        Outbound::ConnAck {
            session_present,
            reason,
            info,
        } => {
            let info = *info;
            let properties = v5::ConnAckProperties {
                session_expiry_interval: info.session_expiry_interval,
                receive_max: info.receive_maximum,
                max_qos: None,
                retain_available: info.retain_available.map(u8::from),
                max_packet_size: info.maximum_packet_size,
                assigned_client_identifier: info.assigned_client_id,
                topic_alias_max: info.topic_alias_maximum,
                reason_string: info.reason_string,
                user_properties: Vec::new(),
                wildcard_subscription_available: None,
                subscription_identifiers_available: Some(u8::from(
                    info.subscription_identifiers_available.unwrap_or(false),
                )),
                shared_subscription_available: info.shared_subscription_available.map(u8::from),
                server_keep_alive: info.server_keep_alive,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            };
            v5::Packet::ConnAck(v5::ConnAck {
                session_present: session_present && reason == Reason::Success,
                code: v5_connect_code(reason),
                properties: Some(properties),
            })
        }
        Outbound::Publish {
            pkid,
            dup,
            message,
            subscription_ids,
            topic_alias,
        } => {
            let p = message.properties;
            let has_props = p != MessageProperties::default()
                || !subscription_ids.is_empty()
                || topic_alias.is_some();
            v5::Packet::Publish(v5::Publish {
                dup,
                qos: qos_to_v5(message.qos),
                retain: message.retain,
                topic: bytes::Bytes::from(message.topic.into_bytes()),
                pkid,
                payload: message.payload,
                properties: has_props.then_some(v5::PublishProperties {
                    payload_format_indicator: p.payload_format_indicator,
                    message_expiry_interval: p.message_expiry_interval,
                    topic_alias,
                    response_topic: p.response_topic,
                    correlation_data: p.correlation_data,
                    user_properties: p.user_properties,
                    subscription_identifiers: subscription_ids
                        .into_iter()
                        .filter_map(|id| usize::try_from(id).ok())
                        .collect(),
                    content_type: p.content_type,
                }),
            })
        }
        Outbound::PubAck {
            pkid,
            reason,
            reason_string,
        } => v5::Packet::PubAck(v5::PubAck {
            pkid,
            reason: v5_puback_reason(reason),
            properties: reason_props(reason_string, |s| v5::PubAckProperties {
                reason_string: Some(s),
                user_properties: Vec::new(),
            }),
        }),
        Outbound::PubRec {
            pkid,
            reason,
            reason_string,
        } => v5::Packet::PubRec(v5::PubRec {
            pkid,
            reason: v5_pubrec_reason(reason),
            properties: reason_props(reason_string, |s| v5::PubRecProperties {
                reason_string: Some(s),
                user_properties: Vec::new(),
            }),
        }),
        Outbound::PubRel(pkid) => v5::Packet::PubRel(v5::PubRel::new(pkid, None)),
        Outbound::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
        Outbound::SubAck {
            pkid,
            outcomes,
            reason_string,
        } => v5::Packet::SubAck(v5::SubAck {
            pkid,
            return_codes: outcomes.into_iter().map(v5_suback_code).collect(),
            properties: reason_props(reason_string, |s| v5::SubAckProperties {
                reason_string: Some(s),
                user_properties: Vec::new(),
            }),
        }),
        Outbound::UnsubAck { pkid, reasons } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid,
            reasons: reasons.into_iter().map(v5_unsuback_reason).collect(),
            properties: None,
        }),
        Outbound::PingResp => v5::Packet::PingResp(v5::PingResp),
        Outbound::Disconnect {
            reason,
            reason_string,
        } => {
            // Encoded by `write_v5_disconnect`; never reached.
            let _ = (reason, reason_string);
            v5::Packet::Disconnect(v5::Disconnect::new(
                v5::DisconnectReasonCode::NormalDisconnection,
            ))
        }
    }
}

/// MQTT 5 DISCONNECT, written here because rumqttc 0.25 frames a DISCONNECT with a reason
/// code wrongly (one byte short without properties, as a normal disconnect with empty ones).
fn write_v5_disconnect(reason: Reason, reason_string: Option<&str>, dst: &mut BytesMut) {
    use bytes::BufMut;
    let code = v5_disconnect_reason(reason) as u8;
    if code == 0 && reason_string.is_none() {
        dst.put_slice(&[0xE0, 0x00]);
        return;
    }
    let mut props = BytesMut::new();
    if let Some(s) = reason_string {
        let s = &s.as_bytes()[..s.len().min(1024)];
        props.put_u8(0x1F);
        props.put_u16(s.len() as u16);
        props.put_slice(s);
    }
    let mut body = BytesMut::new();
    body.put_u8(code);
    put_varint(&mut body, props.len());
    body.put_slice(&props);
    dst.put_u8(0xE0);
    put_varint(dst, body.len());
    dst.put_slice(&body);
}

fn put_varint(dst: &mut BytesMut, mut n: usize) {
    use bytes::BufMut;
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        dst.put_u8(byte);
        if n == 0 {
            break;
        }
    }
}

/// Skips what is left of the input after a fatal error (keeps the caller's buffer small).
pub fn discard(src: &mut BytesMut) {
    let n = src.len();
    src.advance(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::QoS;

    fn decode_all(codec: &mut Codec, bytes: &[u8]) -> Result<Vec<Inbound>, Error> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(p) = codec.decode(&mut buf)? {
            out.push(p);
        }
        Ok(out)
    }

    fn v4_connect() -> Vec<u8> {
        let mut c = v4::Connect::new("dev-1");
        c.keep_alive = 0;
        c.clean_session = false;
        c.set_login("user", "pass");
        let mut buf = BytesMut::new();
        let _ = v4::Packet::Connect(c).write(&mut buf, 1 << 20);
        buf.to_vec()
    }

    #[test]
    fn decodes_v311_connect_byte_by_byte() -> Result<(), Error> {
        let bytes = v4_connect();
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::new();
        let mut got = None;
        for b in bytes {
            buf.extend_from_slice(&[b]);
            if let Some(p) = codec.decode(&mut buf)? {
                got = Some(p);
            }
        }
        let Some(Inbound::Connect(c)) = got else {
            return Err(Error::Protocol("no connect decoded"));
        };
        assert_eq!(c.version, Version::V311);
        assert_eq!(c.client_id, "dev-1");
        assert_eq!(c.keep_alive, 0);
        assert!(!c.clean_start);
        assert_eq!(c.session_expiry_interval, u32::MAX);
        assert_eq!(c.password.as_deref(), Some("pass"));
        assert_eq!(codec.version(), Some(Version::V311));
        Ok(())
    }

    #[test]
    fn refuses_non_connect_first_packet() {
        let mut codec = Codec::new(1024);
        assert!(matches!(
            decode_all(&mut codec, &[0xC0, 0x00]),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn refuses_unknown_protocol_level() {
        let mut codec = Codec::new(1024);
        let mut bytes = v4_connect();
        bytes[8] = 3;
        assert!(matches!(
            decode_all(&mut codec, &bytes),
            Err(Error::UnsupportedProtocol(3))
        ));
    }

    #[test]
    fn refuses_oversized_frame_from_its_header() -> Result<(), Error> {
        let mut codec = Codec::new(128);
        decode_all(&mut codec, &v4_connect())?;
        // PUBLISH announcing 1000 bytes: refused before the body arrives.
        let r = decode_all(&mut codec, &[0x30, 0xE8, 0x07, 0x00]);
        assert!(matches!(r, Err(Error::PacketTooLarge(1000))));
        Ok(())
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut seed: u32 = 7;
        for len in 0..200usize {
            let mut bytes = v4_connect();
            for _ in 0..(len % 13) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let at = (seed as usize) % bytes.len();
                bytes[at] = (seed >> 16) as u8;
            }
            bytes.extend((0..len).map(|i| (i as u8).wrapping_mul(31)));
            let mut codec = Codec::new(4096);
            let _ = decode_all(&mut codec, &bytes);
        }
    }

    #[test]
    fn v5_disconnect_with_a_reason_is_framed_correctly() -> Result<(), Error> {
        let mut codec = Codec::new(1024);
        codec.version = Some(Version::V5);
        let mut dst = BytesMut::new();
        codec.encode(
            Outbound::Disconnect {
                reason: Reason::KeepAliveTimeout,
                reason_string: None,
            },
            &mut dst,
        )?;
        assert_eq!(&dst[..], &[0xE0, 0x02, 0x8D, 0x00]);
        Ok(())
    }

    #[test]
    fn encodes_v5_puback_with_reason() -> Result<(), Error> {
        let mut codec = Codec::new(1024);
        codec.version = Some(Version::V5);
        let mut dst = BytesMut::new();
        codec.encode(
            Outbound::PubAck {
                pkid: 7,
                reason: Reason::QuotaExceeded,
                reason_string: None,
            },
            &mut dst,
        )?;
        assert_eq!(&dst[..], &[0x40, 0x04, 0x00, 0x07, 0x97, 0x00]);
        Ok(())
    }

    fn v5_codec(client_max: Option<u32>) -> Codec {
        let mut codec = Codec::new(1024);
        codec.version = Some(Version::V5);
        codec.client_max_packet_size = client_max;
        codec
    }

    fn message(topic: &str) -> Message {
        Message {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"p"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties::default(),
        }
    }

    #[test]
    fn publish_carries_subscription_ids_and_topic_alias_3_3_4_3() -> Result<(), Error> {
        let mut dst = BytesMut::new();
        v5_codec(None).encode(
            Outbound::Publish {
                pkid: 3,
                dup: false,
                message: message(""),
                subscription_ids: vec![1, 268_435_455],
                topic_alias: Some(7),
            },
            &mut dst,
        )?;
        let Ok(v5::Packet::Publish(p)) = v5::Packet::read(&mut dst, None) else {
            return Err(Error::Protocol("not a PUBLISH"));
        };
        let props = p.properties.ok_or(Error::Protocol("no properties"))?;
        assert_eq!(props.subscription_identifiers, [1, 268_435_455]);
        assert_eq!(props.topic_alias, Some(7));
        assert!(p.topic.is_empty());
        Ok(())
    }

    #[test]
    fn reason_string_left_out_to_fit_client_maximum_3_1_2_25() -> Result<(), Error> {
        let ack = || Outbound::PubAck {
            pkid: 1,
            reason: Reason::QuotaExceeded,
            reason_string: Some("x".repeat(200)),
        };
        let mut dst = BytesMut::new();
        v5_codec(Some(64)).encode(ack(), &mut dst)?;
        assert!(dst.len() <= 64, "{} bytes", dst.len());
        assert_eq!(&dst[..], &[0x40, 0x04, 0x00, 0x01, 0x97, 0x00]);
        let mut dst = BytesMut::new();
        v5_codec(None).encode(ack(), &mut dst)?;
        assert!(dst.len() > 200, "kept when it fits");
        let mut dst = BytesMut::new();
        v5_codec(Some(8)).encode(
            Outbound::Disconnect {
                reason: Reason::ProtocolError,
                reason_string: Some("y".repeat(100)),
            },
            &mut dst,
        )?;
        assert_eq!(&dst[..], &[0xE0, 0x02, 0x82, 0x00]);
        Ok(())
    }

    #[test]
    fn no_reason_strings_on_acks_without_problem_information_3_1_2_29() -> Result<(), Error> {
        let ack = || Outbound::PubAck {
            pkid: 1,
            reason: Reason::NotAuthorized,
            reason_string: Some("may not publish".into()),
        };
        for (request_problem_info, kept) in [(None, true), (Some(1), true), (Some(0), false)] {
            let mut codec = Codec::new(1024);
            let mut buf = BytesMut::new();
            let connect = v5::Connect {
                keep_alive: 0,
                client_id: "c".into(),
                clean_start: true,
                properties: Some(v5::ConnectProperties {
                    request_problem_info,
                    ..v5::ConnectProperties::new()
                }),
            };
            let _ = v5::Packet::Connect(connect, None, None).write(&mut buf, None);
            decode_all(&mut codec, &buf)?;
            let mut dst = BytesMut::new();
            codec.encode(ack(), &mut dst)?;
            assert_eq!(
                dst.len() > 6,
                kept,
                "{request_problem_info:?}: {} bytes",
                dst.len()
            );
            // DISCONNECT may still say why.
            let mut dst = BytesMut::new();
            codec.encode(
                Outbound::Disconnect {
                    reason: Reason::ProtocolError,
                    reason_string: Some("why".into()),
                },
                &mut dst,
            )?;
            assert!(dst.len() > 4);
        }
        Ok(())
    }

    #[test]
    fn decodes_client_topic_alias_and_alias_maximum() -> Result<(), Error> {
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::new();
        let connect = v5::Connect {
            keep_alive: 0,
            client_id: "c".into(),
            clean_start: true,
            properties: Some(v5::ConnectProperties {
                topic_alias_max: Some(4),
                ..v5::ConnectProperties::new()
            }),
        };
        let _ = v5::Packet::Connect(connect, None, None).write(&mut buf, None);
        let mut publish = v5::Publish::new("", rumqttc::v5::mqttbytes::QoS::AtMostOnce, "x", None);
        publish.properties = Some(v5::PublishProperties {
            topic_alias: Some(2),
            ..Default::default()
        });
        let _ = v5::Packet::Publish(publish).write(&mut buf, None);
        let got = decode_all(&mut codec, &buf)?;
        let [
            Inbound::Connect(c),
            Inbound::Publish {
                topic_alias,
                message,
                ..
            },
        ] = &got[..]
        else {
            return Err(Error::Protocol("unexpected packets"));
        };
        assert_eq!(c.topic_alias_maximum, 4);
        assert_eq!(*topic_alias, Some(2));
        assert!(message.topic.is_empty());
        Ok(())
    }
}
