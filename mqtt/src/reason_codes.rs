//! The neutral values of `packet.rs` mapped onto rumqttc's types: MQTT 5 reason codes
//! ([`Reason`]) onto rumqttc's per-packet enums (and back, for a PUBACK a client reads),
//! and onto the 3.1.1 CONNACK return codes (3.1.1 has no other reason codes); QoS levels
//! onto both versions' `QoS`. A leaf: `codec.rs` uses it, it uses nothing above
//! `packet.rs`.

use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

use crate::packet::{QoS, Reason, SubscribeOutcome};

pub(crate) fn qos_from_v4(q: rumqttc::mqttbytes::QoS) -> QoS {
    match q {
        rumqttc::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub(crate) fn qos_to_v4(q: QoS) -> rumqttc::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

pub(crate) fn qos_from_v5(q: rumqttc::v5::mqttbytes::QoS) -> QoS {
    match q {
        rumqttc::v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub(crate) fn qos_to_v5(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl From<rumqttc::v5::mqttbytes::QoS> for QoS {
    fn from(q: rumqttc::v5::mqttbytes::QoS) -> Self {
        qos_from_v5(q)
    }
}

/// A PUBACK's reason as a client reads it (rumqttc's decoder knows these nine).
impl From<v5::PubAckReason> for Reason {
    fn from(r: v5::PubAckReason) -> Self {
        use v5::PubAckReason as P;
        match r {
            P::Success => Reason::Success,
            P::NoMatchingSubscribers => Reason::NoMatchingSubscribers,
            P::UnspecifiedError => Reason::UnspecifiedError,
            P::ImplementationSpecificError => Reason::ImplementationSpecificError,
            P::NotAuthorized => Reason::NotAuthorized,
            P::TopicNameInvalid => Reason::TopicNameInvalid,
            P::PacketIdentifierInUse => Reason::PacketIdentifierInUse,
            P::QuotaExceeded => Reason::QuotaExceeded,
            P::PayloadFormatInvalid => Reason::PayloadFormatInvalid,
        }
    }
}

pub(crate) fn v4_connect_code(r: Reason) -> v4::ConnectReturnCode {
    use v4::ConnectReturnCode as C;
    match r {
        Reason::Success => C::Success,
        Reason::UnsupportedProtocolVersion => C::RefusedProtocolVersion,
        Reason::ClientIdentifierNotValid => C::BadClientId,
        Reason::BadUserNameOrPassword => C::BadUserNamePassword,
        Reason::NotAuthorized => C::NotAuthorized,
        _ => C::ServiceUnavailable,
    }
}

pub(crate) fn v5_connect_code(r: Reason) -> v5::ConnectReturnCode {
    use v5::ConnectReturnCode as C;
    match r {
        Reason::Success => C::Success,
        Reason::UnsupportedProtocolVersion => C::UnsupportedProtocolVersion,
        Reason::ClientIdentifierNotValid => C::ClientIdentifierNotValid,
        Reason::BadUserNameOrPassword => C::BadUserNamePassword,
        Reason::NotAuthorized => C::NotAuthorized,
        Reason::ServerUnavailable => C::ServerUnavailable,
        Reason::ServerBusy => C::ServerBusy,
        Reason::MalformedPacket => C::MalformedPacket,
        Reason::ProtocolError => C::ProtocolError,
        Reason::PacketTooLarge => C::PacketTooLarge,
        Reason::QuotaExceeded => C::QuotaExceeded,
        Reason::TopicNameInvalid => C::TopicNameInvalid,
        Reason::ImplementationSpecificError => C::ImplementationSpecificError,
        _ => C::UnspecifiedError,
    }
}

pub(crate) fn v5_puback_reason(r: Reason) -> v5::PubAckReason {
    use v5::PubAckReason as P;
    match r {
        Reason::Success => P::Success,
        Reason::NoMatchingSubscribers => P::NoMatchingSubscribers,
        Reason::ImplementationSpecificError => P::ImplementationSpecificError,
        Reason::NotAuthorized => P::NotAuthorized,
        Reason::TopicNameInvalid => P::TopicNameInvalid,
        Reason::PacketIdentifierInUse => P::PacketIdentifierInUse,
        Reason::QuotaExceeded => P::QuotaExceeded,
        Reason::PayloadFormatInvalid => P::PayloadFormatInvalid,
        _ => P::UnspecifiedError,
    }
}

pub(crate) fn v5_pubrec_reason(r: Reason) -> v5::PubRecReason {
    use v5::PubRecReason as P;
    match r {
        Reason::Success => P::Success,
        Reason::NoMatchingSubscribers => P::NoMatchingSubscribers,
        Reason::ImplementationSpecificError => P::ImplementationSpecificError,
        Reason::NotAuthorized => P::NotAuthorized,
        Reason::TopicNameInvalid => P::TopicNameInvalid,
        Reason::PacketIdentifierInUse => P::PacketIdentifierInUse,
        Reason::QuotaExceeded => P::QuotaExceeded,
        Reason::PayloadFormatInvalid => P::PayloadFormatInvalid,
        _ => P::UnspecifiedError,
    }
}

pub(crate) fn v5_suback_code(o: SubscribeOutcome) -> v5::SubscribeReasonCode {
    use v5::SubscribeReasonCode as S;
    match o {
        SubscribeOutcome::Granted(q) => S::Success(qos_to_v5(q)),
        SubscribeOutcome::Refused(r) => match r {
            Reason::ImplementationSpecificError => S::ImplementationSpecific,
            Reason::NotAuthorized => S::NotAuthorized,
            Reason::TopicFilterInvalid => S::TopicFilterInvalid,
            Reason::PacketIdentifierInUse => S::PkidInUse,
            Reason::QuotaExceeded => S::QuotaExceeded,
            Reason::SharedSubscriptionsNotSupported => S::SharedSubscriptionsNotSupported,
            Reason::WildcardSubscriptionsNotSupported => S::WildcardSubscriptionsNotSupported,
            _ => S::Unspecified,
        },
    }
}

pub(crate) fn v5_unsuback_reason(r: Reason) -> v5::UnsubAckReason {
    use v5::UnsubAckReason as U;
    match r {
        Reason::Success => U::Success,
        Reason::NoSubscriptionExisted => U::NoSubscriptionExisted,
        Reason::ImplementationSpecificError => U::ImplementationSpecificError,
        Reason::NotAuthorized => U::NotAuthorized,
        Reason::TopicFilterInvalid => U::TopicFilterInvalid,
        Reason::PacketIdentifierInUse => U::PacketIdentifierInUse,
        _ => U::UnspecifiedError,
    }
}

pub(crate) fn v5_disconnect_reason(r: Reason) -> v5::DisconnectReasonCode {
    use v5::DisconnectReasonCode as D;
    match r {
        Reason::Success => D::NormalDisconnection,
        Reason::MalformedPacket => D::MalformedPacket,
        Reason::ProtocolError => D::ProtocolError,
        Reason::ImplementationSpecificError => D::ImplementationSpecificError,
        Reason::NotAuthorized => D::NotAuthorized,
        Reason::ServerBusy => D::ServerBusy,
        Reason::ServerShuttingDown => D::ServerShuttingDown,
        Reason::KeepAliveTimeout => D::KeepAliveTimeout,
        Reason::SessionTakenOver => D::SessionTakenOver,
        Reason::TopicFilterInvalid => D::TopicFilterInvalid,
        Reason::TopicNameInvalid => D::TopicNameInvalid,
        Reason::ReceiveMaximumExceeded => D::ReceiveMaximumExceeded,
        Reason::TopicAliasInvalid => D::TopicAliasInvalid,
        Reason::PacketTooLarge => D::PacketTooLarge,
        Reason::QuotaExceeded => D::QuotaExceeded,
        Reason::PayloadFormatInvalid => D::PayloadFormatInvalid,
        _ => D::UnspecifiedError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puback_reasons_round_trip() {
        use v5::PubAckReason as P;
        for p in [
            P::Success,
            P::NoMatchingSubscribers,
            P::UnspecifiedError,
            P::ImplementationSpecificError,
            P::NotAuthorized,
            P::TopicNameInvalid,
            P::PacketIdentifierInUse,
            P::QuotaExceeded,
            P::PayloadFormatInvalid,
        ] {
            assert_eq!(v5_puback_reason(Reason::from(p)), p);
        }
    }
}
