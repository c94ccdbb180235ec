//! Version-neutral MQTT packets as the server sees them.
//!
//! The wire formats of MQTT 3.1.1 and 5 are decoded by rumqttc's codecs (see `codec.rs`);
//! this module is the one shape both versions are turned into, so that the connection
//! state machine and the storage backends never branch on the protocol version except
//! where the specification does.

use bytes::Bytes;

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS level as a number.
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// The protocol level a client connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// MQTT 5 publish properties that travel with a message. Empty under 3.1.1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    /// 0 = unspecified bytes, 1 = UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// Seconds the message may live.
    pub message_expiry_interval: Option<u32>,
    /// MIME type of the payload.
    pub content_type: Option<String>,
    /// Topic for a response (request/response pattern).
    pub response_topic: Option<String>,
    /// Opaque correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order, duplicates allowed.
    pub user_properties: Vec<(String, String)>,
}

/// An application message: what a PUBLISH carries, and what a will is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name (validated: no wildcards).
    pub topic: String,
    /// Payload, zero-copy from the read buffer.
    pub payload: Bytes,
    /// Requested quality of service.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 properties.
    pub properties: MessageProperties,
}

/// The will of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The message published when the connection ends abnormally.
    pub message: Message,
    /// MQTT 5 will delay interval, seconds.
    pub delay_interval: u32,
}

/// A CONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level.
    pub version: Version,
    /// Client identifier; may be empty (then the server assigns one).
    pub client_id: String,
    /// Clean session (3.1.1) or clean start (5).
    pub clean_start: bool,
    /// Keepalive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// User name, if present.
    pub username: Option<String>,
    /// Password, if present.
    pub password: Option<String>,
    /// The will, if any.
    pub will: Option<Will>,
    /// MQTT 5 session expiry interval; 3.1.1 maps clean_session=false to "never".
    pub session_expiry_interval: u32,
    /// How many QoS 1/2 publishes the client accepts in flight (65535 when absent).
    pub receive_maximum: u16,
    /// Largest packet the client accepts.
    pub maximum_packet_size: Option<u32>,
    /// MQTT 5 Topic Alias Maximum: aliases the server may use towards the client (0
    /// when absent, and under 3.1.1).
    pub topic_alias_maximum: u16,
}

/// One filter of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest {
    /// Topic filter.
    pub filter: String,
    /// Maximum QoS requested.
    pub qos: QoS,
    /// MQTT 5 no-local option.
    pub no_local: bool,
    /// MQTT 5 retain-as-published option.
    pub retain_as_published: bool,
    /// MQTT 5 retain handling: 0 send on subscribe, 1 only if new, 2 never.
    pub retain_handling: u8,
    /// MQTT 5 Subscription Identifier of the SUBSCRIBE this came in (1..=268,435,455):
    /// every PUBLISH sent for this subscription carries it (3.8.2.1.2, 3.3.4-3).
    pub subscription_id: Option<u32>,
}

/// A packet received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// CONNECT.
    Connect(Box<Connect>),
    /// PUBLISH.
    Publish {
        /// Packet identifier (0 at QoS 0).
        pkid: u16,
        /// Duplicate flag.
        dup: bool,
        /// The message (its topic is empty when the alias stands for it).
        message: Message,
        /// MQTT 5 Topic Alias, resolved by the session core.
        topic_alias: Option<u16>,
    },
    /// PUBACK for a QoS 1 delivery.
    PubAck(u16),
    /// PUBREC for a QoS 2 delivery.
    PubRec(u16),
    /// PUBREL of a QoS 2 publish.
    PubRel(u16),
    /// PUBCOMP for a QoS 2 delivery.
    PubComp(u16),
    /// SUBSCRIBE.
    Subscribe {
        /// Packet identifier.
        pkid: u16,
        /// Filters, in order.
        subscriptions: Vec<SubscriptionRequest>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet identifier.
        pkid: u16,
        /// Filters, in order.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect {
        /// MQTT 5 reason (0 = normal; 0x04 = disconnect with will message).
        reason: u8,
        /// MQTT 5 session expiry update.
        session_expiry_interval: Option<u32>,
    },
    /// A packet type a client must never send to a server (CONNACK, SUBACK, ...), or AUTH,
    /// which we do not support.
    Unexpected(&'static str),
}

/// MQTT 5 reason codes the server sends, with their 3.1.1 meaning where one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// 0x00.
    Success = 0x00,
    /// 0x10, PUBACK: accepted, nobody subscribed.
    NoMatchingSubscribers = 0x10,
    /// 0x11, UNSUBACK.
    NoSubscriptionExisted = 0x11,
    /// 0x80.
    UnspecifiedError = 0x80,
    /// 0x81.
    MalformedPacket = 0x81,
    /// 0x82.
    ProtocolError = 0x82,
    /// 0x83.
    ImplementationSpecificError = 0x83,
    /// 0x84, CONNACK; 3.1.1 return code 1.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85, CONNACK; 3.1.1 return code 2.
    ClientIdentifierNotValid = 0x85,
    /// 0x86, CONNACK; 3.1.1 return code 4.
    BadUserNameOrPassword = 0x86,
    /// 0x87; 3.1.1 return code 5.
    NotAuthorized = 0x87,
    /// 0x88, CONNACK; 3.1.1 return code 3.
    ServerUnavailable = 0x88,
    /// 0x89.
    ServerBusy = 0x89,
    /// 0x8B, DISCONNECT.
    ServerShuttingDown = 0x8B,
    /// 0x8D, DISCONNECT.
    KeepAliveTimeout = 0x8D,
    /// 0x8E, DISCONNECT.
    SessionTakenOver = 0x8E,
    /// 0x8F.
    TopicFilterInvalid = 0x8F,
    /// 0x90.
    TopicNameInvalid = 0x90,
    /// 0x91.
    PacketIdentifierInUse = 0x91,
    /// 0x93, DISCONNECT.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94, DISCONNECT.
    TopicAliasInvalid = 0x94,
    /// 0x95.
    PacketTooLarge = 0x95,
    /// 0x97.
    QuotaExceeded = 0x97,
    /// 0x99.
    PayloadFormatInvalid = 0x99,
    /// 0x9A.
    RetainNotSupported = 0x9A,
    /// 0x9B.
    QoSNotSupported = 0x9B,
    /// 0x9E.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0xA2.
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl Reason {
    /// Whether this is an error (>= 0x80).
    pub fn is_error(self) -> bool {
        self as u8 >= 0x80
    }
}

/// Outcome of one SUBSCRIBE filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// Granted at this QoS.
    Granted(QoS),
    /// Refused with this reason (3.1.1 only says 0x80).
    Refused(Reason),
}

/// What the server sends in a CONNACK besides the code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckInfo {
    /// Client identifier assigned by the server (MQTT 5, when the client sent none).
    pub assigned_client_id: Option<String>,
    /// How many QoS 1/2 publishes the server accepts in flight.
    pub receive_maximum: Option<u16>,
    /// Largest packet the server accepts.
    pub maximum_packet_size: Option<u32>,
    /// Keepalive the server imposes.
    pub server_keep_alive: Option<u16>,
    /// Session expiry the server imposes.
    pub session_expiry_interval: Option<u32>,
    /// Whether retained messages are supported.
    pub retain_available: Option<bool>,
    /// Whether shared subscriptions are supported.
    pub shared_subscription_available: Option<bool>,
    /// Topic Alias Maximum: aliases the client may use.
    pub topic_alias_maximum: Option<u16>,
    /// Whether Subscription Identifiers are supported (absent: sent as 0, not).
    pub subscription_identifiers_available: Option<bool>,
    /// Human readable reason.
    pub reason_string: Option<String>,
}

/// A packet sent to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// CONNACK.
    ConnAck {
        /// Session present flag.
        session_present: bool,
        /// Result.
        reason: Reason,
        /// MQTT 5 properties.
        info: Box<ConnAckInfo>,
    },
    /// PUBLISH to the client.
    Publish {
        /// Packet identifier (0 at QoS 0).
        pkid: u16,
        /// Duplicate flag.
        dup: bool,
        /// The message (its qos is the delivery QoS).
        message: Message,
        /// MQTT 5 Subscription Identifiers of the client's subscriptions it matched.
        subscription_ids: Vec<u32>,
        /// MQTT 5 Topic Alias (with an empty topic once the client knows it).
        topic_alias: Option<u16>,
    },
    /// PUBACK.
    PubAck {
        /// Packet identifier.
        pkid: u16,
        /// Reason (MQTT 5 only).
        reason: Reason,
        /// Reason string (MQTT 5 only).
        reason_string: Option<String>,
    },
    /// PUBREC.
    PubRec {
        /// Packet identifier.
        pkid: u16,
        /// Reason (MQTT 5 only).
        reason: Reason,
        /// Reason string (MQTT 5 only).
        reason_string: Option<String>,
    },
    /// PUBREL.
    PubRel(u16),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBACK.
    SubAck {
        /// Packet identifier.
        pkid: u16,
        /// One outcome per filter.
        outcomes: Vec<SubscribeOutcome>,
        /// Reason string (MQTT 5 only).
        reason_string: Option<String>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Packet identifier.
        pkid: u16,
        /// One reason per filter (MQTT 5 only).
        reasons: Vec<Reason>,
    },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT from the server (MQTT 5 only; under 3.1.1 the server just closes).
    Disconnect {
        /// Why.
        reason: Reason,
        /// Human readable reason.
        reason_string: Option<String>,
    },
}
