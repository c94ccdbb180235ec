//! A raw MQTT client over TCP built on rumqttc's codecs, for tests that need to see exact
//! packets (CONNACK codes, PUBACK reasons, server DISCONNECTs) or send broken ones.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[allow(clippy::large_enum_variant)]
pub enum Packet {
    V4(v4::Packet),
    V5(v5::Packet),
}

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    pub v5: bool,
}

impl Raw {
    pub async fn connect(addr: std::net::SocketAddr, v5: bool) -> Raw {
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
        let mut b = BytesMut::new();
        p.write(&mut b, None).expect("encode");
        self.send_bytes(&b).await;
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
