#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! CONNECT and session basics against the real broker: HmacSHA1 auth, mutual TLS,
//! keepalive (0 = off), wills, refused first-level topics and ACLs.

mod harness;

use std::time::Duration;

use bytes::Bytes;
use harness::clients::{Proto, Tls, rustls_client};
use harness::{config_text, consume, password, start_bridge};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use test_support::certs::Pki;
use test_support::raw::{Packet, Raw};
use test_support::unique;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_signature_is_checked_with_the_right_connack_codes() {
    let first = unique("auth");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    for v5 in [false, true] {
        let mut ok = Raw::connect(addr, v5).await;
        assert_eq!(
            ok.handshake("dev1", Some("demo"), Some(&password("dev1")))
                .await,
            0
        );
        let refused = if v5 { 0x86 } else { 4 };
        let mut bad = Raw::connect(addr, v5).await;
        // The signature of another client id.
        assert_eq!(
            bad.handshake("dev1", Some("demo"), Some(&password("dev2")))
                .await,
            refused
        );
        assert!(bad.closed_within(Duration::from_secs(5)).await.0);
        let mut bad_user = Raw::connect(addr, v5).await;
        assert_eq!(
            bad_user
                .handshake("dev1", Some("x"), Some(&password("dev1")))
                .await,
            refused
        );
        let mut anonymous = Raw::connect(addr, v5).await;
        assert_eq!(anonymous.handshake("dev1", None, None).await, refused);
    }
    server.stop(Duration::from_secs(5)).await;
}

/// A test PKI and a listener "mtls" that requires client certificates from its CA.
fn mtls_listener() -> (std::path::PathBuf, Pki, String) {
    let dir = std::env::temp_dir().join(unique("pki-"));
    let pki = Pki::new(&dir);
    let extra = format!(
        "[[listener]]\nname = \"mtls\"\nbind = \"127.0.0.1:0\"\ntls = {{ cert = {:?}, key = {:?}, client_ca = {:?}, require_client_cert = true }}\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    (dir, pki, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_the_client_and_untrusted_ones_are_refused() {
    let first = unique("mtls");
    let (dir, pki, extra) = mtls_listener();
    let (server, _) = start_bridge(&config_text(&first, &[], &extra)).await;
    let addr = server.local_addr("mtls").unwrap();
    let gw = pki.client("gw-1", true);
    let rogue = pki.client("gw-1", false);

    // A trusted certificate: no password needed, the identity is the certificate's, and
    // publishes go through.
    let msg = harness::clients::Msg {
        topic: format!("{first}/gw-1/temp"),
        qos: 1,
        payload: b"21.5".to_vec(),
        user: Vec::new(),
    };
    harness::clients::rumqttc_publish(
        addr,
        Proto::V5,
        Some(Tls {
            ca: &pki.ca,
            client: Some((&gw.cert, &gw.key)),
        }),
        "gw-1",
        "not-the-password",
        &[msg],
    )
    .await;
    assert_eq!(consume(&first, 1)[0]["body_utf8"], "21.5");

    // Untrusted certificate, and no certificate at all: the TLS handshake fails.
    for client in [Some((&rogue.cert, &rogue.key)), None] {
        let config = rustls_client(&Tls {
            ca: &pki.ca,
            client: client.map(|(c, k)| (c.as_path(), k.as_path())),
        });
        let connector = tokio_rustls::TlsConnector::from(config);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let result = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tls = connector.connect(name, tcp).await?;
            // TLS 1.3 reports a refused client certificate on the first read.
            let mut b = bytes::BytesMut::new();
            v4::Packet::Connect(v4::Connect::new("gw-1"))
                .write(&mut b, 1 << 16)
                .unwrap();
            tls.write_all(&b).await?;
            let mut buf = [0u8; 16];
            let n = tls.read(&mut buf).await?;
            Ok::<usize, std::io::Error>(n)
        }
        .await;
        assert!(
            matches!(result, Err(_) | Ok(0)),
            "an untrusted or missing client certificate must be refused, got {result:?}"
        );
    }
    server.stop(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_identity_must_match_the_client_id() {
    let first = unique("mtlsid");
    let (dir, pki, extra) = mtls_listener();
    let (server, _) = start_bridge(&config_text(&first, &[], &extra)).await;
    let addr = server.local_addr("mtls").unwrap();
    let gw = pki.client("gw-1", true);
    let config = rustls_client(&Tls {
        ca: &pki.ca,
        client: Some((&gw.cert, &gw.key)),
    });
    let mut o = rumqttc::v5::MqttOptions::new("gw-2", "127.0.0.1", addr.port());
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(config),
    ));
    let (_client, mut ev) = rumqttc::v5::AsyncClient::new(o, 8);
    let err = tokio::time::timeout(Duration::from_secs(10), ev.poll())
        .await
        .expect("an answer")
        .expect_err("gw-2 with gw-1's certificate must be refused");
    assert!(
        matches!(
            err,
            rumqttc::v5::ConnectionError::ConnectionRefused(v5::ConnectReturnCode::NotAuthorized)
        ),
        "{err:?}"
    );
    server.stop(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_zero_is_off_and_others_expire_after_one_and_a_half_periods() {
    let first = unique("ka");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();

    let mut off = Raw::connect(addr, false).await;
    let mut c = v4::Connect::new("ka0");
    c.keep_alive = 0;
    c.set_login("demo", password("ka0"));
    off.send4(v4::Packet::Connect(c)).await;
    assert!(
        matches!(off.recv(Duration::from_secs(5)).await, Some(Packet::V4(v4::Packet::ConnAck(a))) if a.code == v4::ConnectReturnCode::Success)
    );

    let mut short = Raw::connect(addr, true).await;
    let c = v5::Connect {
        keep_alive: 1,
        client_id: "ka1".into(),
        clean_start: true,
        properties: None,
    };
    short
        .send5(v5::Packet::Connect(
            c,
            None,
            Some(v5::Login::new("demo", password("ka1"))),
        ))
        .await;
    assert!(matches!(
        short.recv(Duration::from_secs(5)).await,
        Some(Packet::V5(v5::Packet::ConnAck(_)))
    ));
    // Silent for 1.5 s -> the server closes with reason 0x8D.
    let (closed, seen) = short.closed_within(Duration::from_secs(4)).await;
    assert!(closed, "keepalive 1 s must expire");
    assert!(!seen.is_empty(), "no DISCONNECT before the close");
    assert!(seen.iter().any(|p| matches!(p, Packet::V5(v5::Packet::Disconnect(d)) if d.reason_code == v5::DisconnectReasonCode::KeepAliveTimeout)));

    // The keepalive-0 connection is still alive after 3 s, and answers PINGREQ.
    tokio::time::sleep(Duration::from_secs(3)).await;
    off.send4(v4::Packet::PingReq).await;
    assert!(matches!(
        off.recv(Duration::from_secs(5)).await,
        Some(Packet::V4(v4::Packet::PingResp))
    ));
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_abnormal_disconnect_only() {
    let first = unique("will");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let mut wills = 0;
    for (v5, normal) in [(false, true), (false, false), (true, false)] {
        let id = unique("w");
        let topic = format!("{first}/will/{id}");
        let mut raw = Raw::connect(addr, v5).await;
        if v5 {
            let will = v5::LastWill {
                topic: Bytes::from(topic.clone()),
                message: Bytes::from(format!("gone {id}")),
                qos: rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                retain: false,
                properties: None,
            };
            let c = v5::Connect {
                keep_alive: 30,
                client_id: id.clone(),
                clean_start: true,
                properties: None,
            };
            raw.send5(v5::Packet::Connect(
                c,
                Some(will),
                Some(v5::Login::new("demo", password(&id))),
            ))
            .await;
        } else {
            let mut c = v4::Connect::new(id.clone());
            c.set_login("demo", password(&id));
            c.last_will = Some(v4::LastWill::new(
                topic.clone(),
                format!("gone {id}"),
                rumqttc::QoS::AtLeastOnce,
                false,
            ));
            raw.send4(v4::Packet::Connect(c)).await;
        }
        assert!(raw.recv(Duration::from_secs(5)).await.is_some(), "CONNACK");
        if normal {
            raw.send4(v4::Packet::Disconnect).await;
        }
        drop(raw);
        if !normal {
            wills += 1;
            let got = consume(&first, wills);
            assert!(
                got.iter()
                    .any(|m| m["properties"]["originMqttTopic"] == topic.as_str())
            );
        }
    }
    // Exactly the two abnormal ones landed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = consume(&first, 2);
    assert_eq!(all.len(), 2);
    assert!(
        test_support::rocketmq::tool(&[
            "consume",
            "--topic",
            &first,
            "--count",
            "3",
            "--timeout-ms",
            "3000",
            "--from-start"
        ])
        .is_err()
    );
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_first_level_topics_and_acl_violations_are_refused_with_reasons() {
    let first = unique("acl");
    let extra = format!("[[acl]]\nclients = [\"gw-*\"]\npublish = [\"{first}/{{client}}/#\"]\n");
    let (server, _) = start_bridge(&config_text(&first, &[], &extra)).await;
    let addr = server.local_addr("mqtt").unwrap();

    let publish5 = |topic: &str, pkid: u16| {
        v5::Packet::Publish(v5::Publish {
            dup: false,
            qos: rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            retain: false,
            topic: Bytes::from(topic.to_owned()),
            pkid,
            payload: Bytes::from_static(b"x"),
            properties: None,
        })
    };
    let mut c5 = Raw::connect(addr, true).await;
    assert_eq!(
        c5.handshake("gw-1", Some("demo"), Some(&password("gw-1")))
            .await,
        0
    );
    c5.send5(publish5("nosuchfirst/a", 1)).await;
    match c5.recv(Duration::from_secs(10)).await {
        Some(Packet::V5(v5::Packet::PubAck(a))) => {
            assert_eq!(a.reason, v5::PubAckReason::TopicNameInvalid)
        }
        other => panic!("expected PUBACK 0x90, got {}", other.is_some()),
    }
    c5.send5(publish5(&format!("{first}/gw-2/x"), 2)).await;
    match c5.recv(Duration::from_secs(10)).await {
        Some(Packet::V5(v5::Packet::PubAck(a))) => {
            assert_eq!(a.reason, v5::PubAckReason::NotAuthorized)
        }
        other => panic!("expected PUBACK 0x87, got {}", other.is_some()),
    }
    c5.send5(publish5(&format!("{first}/gw-1/x"), 3)).await;
    match c5.recv(Duration::from_secs(10)).await {
        Some(Packet::V5(v5::Packet::PubAck(a))) => assert_eq!(a.reason, v5::PubAckReason::Success),
        other => panic!("expected PUBACK 0x00, got {}", other.is_some()),
    }

    // 3.1.1 has no reason codes: the connection is closed, nothing acknowledged.
    let mut c4 = Raw::connect(addr, false).await;
    assert_eq!(
        c4.handshake("gw-1", Some("demo"), Some(&password("gw-1")))
            .await,
        0
    );
    let mut p = v4::Publish::new("nosuchfirst/a", rumqttc::QoS::AtLeastOnce, "x");
    p.pkid = 1;
    c4.send4(v4::Packet::Publish(p)).await;
    let (closed, _) = c4.closed_within(Duration::from_secs(10)).await;
    assert!(closed);
    server.stop(Duration::from_secs(5)).await;
}
