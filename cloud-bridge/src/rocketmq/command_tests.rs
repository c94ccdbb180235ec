//! Unit tests of `command.rs`: frame round trips and malformed frames.

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn encode(cmd: &RemotingCommand) -> Result<BytesMut, Error> {
    let mut buf = BytesMut::new();
    RemotingCodec::default().encode(cmd, &mut buf)?;
    Ok(buf)
}

#[test]
fn round_trip() -> TestResult {
    let mut cmd = RemotingCommand::request(request_code::SEND_MESSAGE_V2)
        .field("a", "group")
        .field("b", "topic \"quoted\" \u{1}x\u{2}")
        .with_body(Bytes::from_static(b"hello"));
    cmd.opaque = 42;
    cmd.remark = Some("r".into());
    let mut buf = encode(&cmd)?;
    let second = buf.clone();
    let mut codec = RemotingCodec::default();
    assert_eq!(codec.decode(&mut buf)?.as_ref(), Some(&cmd));
    assert!(buf.is_empty());
    // A frame split across reads.
    let mut partial = BytesMut::from(&second[..10]);
    assert!(codec.decode(&mut partial)?.is_none());
    partial.extend_from_slice(&second[10..]);
    assert_eq!(codec.decode(&mut partial)?, Some(cmd));
    Ok(())
}

#[test]
fn header_is_java_compatible_json() -> TestResult {
    let cmd = RemotingCommand::request(105).field("topic", "t");
    let buf = encode(&cmd)?;
    assert_eq!(buf[4], 0, "serialize type JSON");
    let header_len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    assert_eq!(buf.len(), 8 + header_len);
    let json: serde_json::Value = serde_json::from_slice(&buf[8..])?;
    assert_eq!(json["code"], 105);
    assert_eq!(json["language"], "JAVA");
    assert_eq!(json["version"], VERSION);
    assert_eq!(json["extFields"]["topic"], "t");
    assert_eq!(json["serializeTypeCurrentRPC"], "JSON");
    Ok(())
}

#[test]
fn decodes_lenient_java_response() -> TestResult {
    let header = br#"{"code":0,"extFields":{"queueId":"3","offset":12,"x":null,"b":true},"flag":1,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":475}"#;
    let mut buf = BytesMut::new();
    buf.put_u32((4 + header.len() + 2) as u32);
    buf.put_u32(header.len() as u32);
    buf.put_slice(header);
    buf.put_slice(b"{}");
    let cmd = RemotingCodec::default()
        .decode(&mut buf)?
        .ok_or("no frame")?;
    assert!(cmd.is_response());
    assert_eq!(cmd.opaque, 7);
    assert_eq!(cmd.parse_ext::<i32>("queueId")?, 3);
    assert_eq!(cmd.parse_ext::<i64>("offset")?, 12);
    assert_eq!(cmd.ext("x"), None);
    assert_eq!(cmd.ext("b"), Some("true"));
    assert!(matches!(cmd.parse_ext::<i64>("b"), Err(Error::Protocol(_))));
    assert_eq!(&cmd.body[..], b"{}");
    Ok(())
}

#[test]
fn malformed_frames_are_errors() {
    let cases: Vec<Vec<u8>> = vec![
        // length below the 4-byte header-length field
        vec![0, 0, 0, 2, 0, 0],
        // length beyond the limit
        vec![0x7f, 0xff, 0xff, 0xff],
        // header length beyond the frame
        vec![0, 0, 0, 6, 0, 0, 0, 9, b'{', b'}'],
        // unsupported serialize type (1 = ROCKETMQ)
        vec![0, 0, 0, 6, 1, 0, 0, 2, b'{', b'}'],
        // header not JSON
        vec![0, 0, 0, 6, 0, 0, 0, 2, b'{', b'x'],
        // header JSON of the wrong shape
        vec![0, 0, 0, 7, 0, 0, 0, 3, b'"', b'1', b'"'],
        // a field of the wrong type
        {
            let h = br#"{"code":"x"}"#;
            let mut v = vec![0, 0, 0, 4 + h.len() as u8, 0, 0, 0, h.len() as u8];
            v.extend_from_slice(h);
            v
        },
    ];
    for case in cases {
        let mut buf = BytesMut::from(&case[..]);
        let got = RemotingCodec::new(1024).decode(&mut buf);
        assert!(matches!(got, Err(Error::Frame(_))), "{case:?} gave {got:?}");
    }
}

#[test]
fn oversized_body_is_refused_on_encode() {
    let cmd = RemotingCommand::request(1).with_body(Bytes::from(vec![0u8; 2000]));
    let mut buf = BytesMut::from(&b"keep"[..]);
    let got = RemotingCodec::new(1024).encode(&cmd, &mut buf);
    assert!(matches!(got, Err(Error::Frame(_))));
    assert_eq!(&buf[..], b"keep");
}
