//! Raw MQTT for tests that need to see exact packets (CONNACK codes, PUBACK reasons,
//! server DISCONNECTs) or send broken ones: [`Raw`], a client over TCP built on rumqttc's
//! codecs (3.1.1 and 5), and hand-made bytes ([`connect_v311`], [`publish_v311`],
//! [`remaining_length`], ...) that need no codec at all.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::WAIT;

/// A packet read by [`Raw`], of the version it speaks.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Packet {
    V4(v4::Packet),
    V5(v5::Packet),
}

/// A raw client: what it sends is sent as is, what comes back is decoded.
#[derive(Debug)]
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    pub v5: bool,
}

impl Raw {
    pub async fn connect(addr: SocketAddr, v5: bool) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        Raw {
            stream,
            buf: BytesMut::new(),
            v5,
        }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    pub async fn send4(&mut self, p: v4::Packet) {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).expect("encode");
        self.send_bytes(&b).await;
    }

    pub async fn send5(&mut self, p: v5::Packet) {
        self.send_bytes(&encode(p)).await;
    }

    /// Next packet, or None when the server closed the connection (or after `wait`).
    pub async fn recv(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if !self.buf.is_empty() {
                if self.v5 {
                    match v5::Packet::read(&mut self.buf, None) {
                        Ok(p) => return Some(Packet::V5(p)),
                        Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                        Err(e) => panic!("server sent a malformed packet: {e}"),
                    }
                } else {
                    match v4::Packet::read(&mut self.buf, usize::MAX) {
                        Ok(p) => return Some(Packet::V4(p)),
                        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                        Err(e) => panic!("server sent a malformed packet: {e}"),
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await;
            match n {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A new MQTT 5 connection of client `id` with `props` (clean start, no keep-alive),
    /// accepted (CONNACK success, else a panic).
    pub async fn connect5_accepted(
        addr: SocketAddr,
        id: &str,
        props: v5::ConnectProperties,
    ) -> Raw {
        let mut raw = Raw::connect(addr, true).await;
        raw.send_bytes(&connect5(id, props, None, None)).await;
        match raw.recv5(Duration::from_secs(10)).await {
            Some(v5::Packet::ConnAck(c)) => assert_eq!(c.code as u8, 0, "{c:?}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    /// The next packet of an MQTT 5 connection, or None when the server closed the
    /// connection (or after `wait`).
    pub async fn recv5(&mut self, wait: Duration) -> Option<v5::Packet> {
        match self.recv(wait).await? {
            Packet::V5(p) => Some(p),
            Packet::V4(p) => panic!("a 3.1.1 packet on an MQTT 5 connection: {p:?}"),
        }
    }

    /// The reason code of the server's DISCONNECT, other packets before it skipped; `None`
    /// when the connection closes without one or nothing comes within 15 s. Read from the
    /// bytes: rumqttc 0.25 cannot decode every DISCONNECT.
    pub async fn disconnect_reason(&mut self) -> Option<u8> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if self.buf.len() >= 3 && self.buf[0] == 0xE0 {
                return Some(self.buf[2]);
            }
            if self.buf.len() >= 2
                && self.buf[0] != 0xE0
                && v5::Packet::read(&mut self.buf, None).is_ok()
            {
                continue; // a whole other packet skipped
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the server closes the connection within `wait` (packets before the close,
    /// such as an MQTT 5 DISCONNECT, are skipped and returned).
    pub async fn closed_within(&mut self, wait: Duration) -> (bool, Vec<Packet>) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return (false, seen);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Err(_) => return (false, seen),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    if self.v5 {
                        while let Ok(p) = v5::Packet::read(&mut self.buf, None) {
                            seen.push(Packet::V5(p));
                        }
                    }
                    return (true, seen);
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// CONNECT with the given credentials; returns the CONNACK code (3.1.1 return code or
    /// MQTT 5 reason code as a byte).
    pub async fn handshake(
        &mut self,
        client_id: &str,
        user: Option<&str>,
        pass: Option<&str>,
    ) -> u8 {
        if self.v5 {
            let connect = v5::Connect {
                keep_alive: 30,
                client_id: client_id.into(),
                clean_start: true,
                properties: None,
            };
            let login = match (user, pass) {
                (Some(u), Some(p)) => Some(v5::Login::new(u, p)),
                _ => None,
            };
            self.send5(v5::Packet::Connect(connect, None, login)).await;
        } else {
            let mut connect = v4::Connect::new(client_id);
            connect.keep_alive = 30;
            if let (Some(u), Some(p)) = (user, pass) {
                connect.set_login(u, p);
            }
            self.send4(v4::Packet::Connect(connect)).await;
        }
        match self.recv(Duration::from_secs(10)).await {
            Some(Packet::V4(v4::Packet::ConnAck(a))) => a.code as u8,
            Some(Packet::V5(v5::Packet::ConnAck(a))) => v5_connack_code(a.code),
            _ => panic!("no CONNACK"),
        }
    }
}

pub fn v5_connack_code(c: v5::ConnectReturnCode) -> u8 {
    use v5::ConnectReturnCode as C;
    match c {
        C::Success => 0x00,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ClientIdentifierNotValid => 0x85,
        C::ServerUnavailable => 0x88,
        C::UnsupportedProtocolVersion => 0x84,
        _ => 0x80,
    }
}

/// An MQTT 5 packet's bytes (rumqttc's encoder).
pub fn encode(p: v5::Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    p.write(&mut b, None).expect("encode");
    b.to_vec()
}

/// An MQTT 5 CONNECT, clean start, no keep-alive.
pub fn connect5(
    id: &str,
    props: v5::ConnectProperties,
    will: Option<v5::LastWill>,
    login: Option<v5::Login>,
) -> Vec<u8> {
    encode(v5::Packet::Connect(
        v5::Connect {
            keep_alive: 0,
            client_id: id.to_owned(),
            clean_start: true,
            properties: Some(props),
        },
        will,
        login,
    ))
}

/// Sends `bytes` on a new connection; the first packet back (its bytes), empty if the
/// server closed first.
pub async fn first_reply(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 256];
    match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        _ => Vec::new(),
    }
}

/// A 3.1.1 CONNECT with `keep_alive`, clean session, no credentials.
pub fn connect_v311(client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    packet(0x10, &body)
}

/// A 3.1.1 CONNECT with a user name and password.
pub fn connect_v311_auth(client_id: &str, user: &str, password: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 30];
    for s in [client_id, user, password] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    packet(0x10, &body)
}

/// Sends `connect` on a new connection; returns the CONNACK return code.
pub async fn connack_code(addr: SocketAddr, connect: &[u8]) -> u8 {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(connect).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, sock.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .unwrap();
    assert_eq!(connack[0], 0x20);
    connack[3]
}

/// A 3.1.1 PUBLISH.
pub fn publish_v311(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// A packet of fixed-header byte `first` and `body`, its remaining length encoded.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend(remaining_length(body.len()));
    p.extend_from_slice(body);
    p
}

/// The variable-length encoding of a remaining length (1 to 4 bytes; longer for a value
/// no MQTT packet may have, for tests that send one).
pub fn remaining_length(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}
