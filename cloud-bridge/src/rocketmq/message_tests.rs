//! Unit tests of `message.rs`: property strings, ids and the stored-message decoder.

use std::io::Write;

use bytes::{BufMut, BytesMut};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Builds one stored message the way the Java broker lays it out.
struct Stored<'a> {
    magic: i32,
    sys_flag: i32,
    born: SocketAddr,
    store: SocketAddr,
    body: &'a [u8],
    topic: &'a str,
    properties: &'a str,
}

impl Stored<'_> {
    fn encode(&self) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(0); // size, patched at the end
        b.put_i32(self.magic);
        b.put_i32(0x1234); // body CRC
        b.put_i32(3); // queue id
        b.put_i32(0); // flag
        b.put_i64(77); // queue offset
        b.put_i64(123_456); // physical offset
        b.put_i32(self.sys_flag);
        b.put_i64(1_700_000_000_000); // born timestamp
        put_host(&mut b, self.born);
        b.put_i64(1_700_000_000_123); // store timestamp
        put_host(&mut b, self.store);
        b.put_i32(1); // reconsume times
        b.put_i64(0); // prepared transaction offset
        b.put_i32(self.body.len() as i32);
        b.put_slice(self.body);
        if self.magic == MAGIC_CODE_V2 {
            b.put_u16(self.topic.len() as u16);
        } else {
            b.put_u8(self.topic.len() as u8);
        }
        b.put_slice(self.topic.as_bytes());
        b.put_u16(self.properties.len() as u16);
        b.put_slice(self.properties.as_bytes());
        let size = b.len() as i32;
        b[..4].copy_from_slice(&size.to_be_bytes());
        b
    }
}

fn put_host(b: &mut BytesMut, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => b.put_slice(&ip.octets()),
        IpAddr::V6(ip) => b.put_slice(&ip.octets()),
    }
    b.put_i32(i32::from(addr.port()));
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), port)
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)
}

#[test]
fn property_round_trip() -> TestResult {
    let encoded = encode_properties([("TAGS", "MQTT_COMMON"), ("qosLevel", "1")])?;
    assert_eq!(encoded, "TAGS\u{1}MQTT_COMMON\u{2}qosLevel\u{1}1\u{2}");
    let decoded = decode_properties(&encoded);
    assert_eq!(decoded.len(), 2);
    assert_eq!(decoded["TAGS"], "MQTT_COMMON");
    assert_eq!(find_property(&encoded, "qosLevel"), Some("1"));
    assert_eq!(find_property(&encoded, "MQTT_COMMON"), None);
    Ok(())
}

#[test]
fn bad_properties_are_refused() {
    for (name, value) in [("", "v"), ("k", ""), ("a\u{1}b", "v"), ("k", "x\u{2}y")] {
        assert!(matches!(
            encode_properties([(name, value)]),
            Err(Error::InvalidProperty(_))
        ));
    }
    let long = "x".repeat(40_000);
    assert!(encode_properties([("k", long.as_str())]).is_err());
}

#[test]
fn property_decoding_is_lenient_like_java() {
    let decoded = decode_properties("a\u{1}1\u{2}broken\u{2}\u{1}x\u{2}e\u{1}\u{2}k\u{1}v\u{1}w");
    assert_eq!(decoded.len(), 2);
    assert_eq!(decoded["a"], "1");
    assert_eq!(decoded["k"], "v\u{1}w");
}

#[test]
fn unique_ids_are_32_hex_and_distinct() {
    let a = new_unique_id();
    let b = new_unique_id();
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
    assert_eq!(a[..16], b[..16], "same process prefix");
}

#[test]
fn decodes_two_messages_v1_and_v2() -> TestResult {
    let props = "UNIQ_KEY\u{1}ABC\u{2}INNER_MULTI_DISPATCH\u{1}%LMQ%t%a%,%LMQ%t%+%\u{2}\
                 INNER_MULTI_QUEUE_OFFSET\u{1}5,9\u{2}";
    let first = Stored {
        magic: MAGIC_CODE_V1,
        sys_flag: 0,
        born: v4(5555),
        store: v4(10911),
        body: b"hello",
        topic: "t",
        properties: props,
    };
    let long_topic = "x".repeat(300);
    let second = Stored {
        magic: MAGIC_CODE_V2,
        sys_flag: SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6,
        born: v6(1),
        store: v6(2),
        body: b"",
        topic: &long_topic,
        properties: "",
    };
    let mut all = first.encode();
    all.extend_from_slice(&second.encode());
    let messages = decode_messages(&all.freeze())?;
    assert_eq!(messages.len(), 2);
    let m = &messages[0];
    assert_eq!(m.topic, "t");
    assert_eq!(
        (m.queue_id, m.queue_offset, m.commit_log_offset),
        (3, 77, 123_456)
    );
    assert_eq!(m.born_host, v4(5555));
    assert_eq!(m.store_host, v4(10911));
    assert_eq!(m.store_timestamp, 1_700_000_000_123);
    assert_eq!(&m.body[..], b"hello");
    assert_eq!(m.msg_id(), Some("ABC"));
    assert_eq!(m.lmq_offset("%LMQ%t%a%"), Some(5));
    assert_eq!(m.lmq_offset("%LMQ%t%+%"), Some(9));
    assert_eq!(m.lmq_offset("%LMQ%other"), None);
    assert_eq!(m.offset_msg_id(), "0A01020300002A9F000000000001E240");
    let m = &messages[1];
    assert_eq!(m.topic, long_topic);
    assert_eq!(m.born_host, v6(1));
    assert_eq!(m.store_host, v6(2));
    assert!(m.body.is_empty() && m.properties.is_empty());
    Ok(())
}

#[test]
fn inflates_zlib_bodies() -> TestResult {
    let payload = b"compressible ".repeat(100);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(5));
    z.write_all(&payload)?;
    let compressed = z.finish()?;
    for type_bits in [0, COMPRESSION_ZLIB << 8] {
        let stored = Stored {
            magic: MAGIC_CODE_V1,
            sys_flag: SYSFLAG_COMPRESSED | type_bits,
            born: v4(1),
            store: v4(2),
            body: &compressed,
            topic: "t",
            properties: "",
        };
        let m = decode_message(&stored.encode().freeze())?;
        assert_eq!(&m.body[..], &payload[..]);
    }
    let lz4 = Stored {
        magic: MAGIC_CODE_V1,
        sys_flag: SYSFLAG_COMPRESSED | (1 << 8),
        born: v4(1),
        store: v4(2),
        body: &compressed,
        topic: "t",
        properties: "",
    };
    assert!(matches!(
        decode_message(&lz4.encode().freeze()),
        Err(Error::Protocol(_))
    ));
    Ok(())
}

#[test]
fn truncated_or_corrupt_messages_are_errors() {
    let good = Stored {
        magic: MAGIC_CODE_V1,
        sys_flag: 0,
        born: v4(1),
        store: v4(2),
        body: b"body",
        topic: "topic",
        properties: "k\u{1}v\u{2}",
    }
    .encode()
    .freeze();
    // Every truncation of the message, with its size field left as is or fixed up.
    for cut in 1..good.len() {
        let part = good.slice(..cut);
        assert!(decode_messages(&part).is_err(), "cut at {cut}");
        let mut fixed = BytesMut::from(&part[..]);
        if cut >= 4 {
            fixed[..4].copy_from_slice(&(cut as i32).to_be_bytes());
            assert!(
                decode_messages(&fixed.freeze()).is_err(),
                "fixed cut at {cut}"
            );
        }
    }
    let mut bad_magic = BytesMut::from(&good[..]);
    bad_magic[4] ^= 0xff;
    assert!(decode_messages(&bad_magic.freeze()).is_err());
    let mut negative_body = BytesMut::from(&good[..]);
    let body_len_at = 4 * 5 + 8 * 2 + 4 + 8 + 8 + 8 + 8 + 4 + 8;
    negative_body[body_len_at..body_len_at + 4].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(decode_messages(&negative_body.freeze()).is_err());
}
