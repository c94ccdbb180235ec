//! Publishing with real MQTT clients: rumqttc (3.1.1 and 5, TCP and TLS), Debian's
//! mosquitto_pub and Python paho-mqtt.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    V311,
    V5,
}

pub struct Tls<'a> {
    pub ca: &'a Path,
    pub client: Option<(&'a Path, &'a Path)>,
}

pub fn rustls_client(tls: &Tls<'_>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(tls.ca).expect("ca") {
        roots.add(c.expect("ca cert")).expect("add ca");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match tls.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<_> = CertificateDer::pem_file_iter(cert)
                .expect("cert")
                .map(|c| c.expect("cert"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).expect("key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
    };
    Arc::new(config)
}

/// One message to publish: topic, QoS, payload, MQTT 5 user properties.
#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub qos: u8,
    pub payload: Vec<u8>,
    pub user: Vec<(String, String)>,
}

/// The QoS type of a client version for 0, 1, 2 (more counts as 2).
pub fn level<Q: Copy>(qos: u8, levels: [Q; 3]) -> Q {
    levels[usize::from(qos.min(2))]
}

/// Publishes with rumqttc and waits for every QoS 1/2 handshake to complete.
pub async fn rumqttc_publish(
    addr: SocketAddr,
    proto: Proto,
    tls: Option<Tls<'_>>,
    client_id: &str,
    password: &str,
    msgs: &[Msg],
) {
    let tls = tls.map(|t| rustls_client(&t));
    let expected_acks = msgs.iter().filter(|m| m.qos > 0).count();
    match proto {
        Proto::V311 => {
            use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
            let mut o = MqttOptions::new(client_id, "127.0.0.1", addr.port());
            o.set_credentials("demo", password);
            o.set_keep_alive(Duration::from_secs(30));
            if let Some(t) = tls {
                o.set_transport(Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(t),
                ));
            }
            let (client, mut ev) = AsyncClient::new(o, 64);
            // Queued from a task: the request channel holds 64, and only polling the
            // event loop below empties it.
            let queue = client.clone();
            let all = msgs.to_vec();
            tokio::spawn(async move {
                for m in all {
                    let qos = level(m.qos, [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
                    queue
                        .publish(m.topic, qos, false, m.payload)
                        .await
                        .expect("queue publish");
                }
            });
            let (mut acks, mut sent) = (0, 0);
            while acks < expected_acks || sent < msgs.len() {
                match tokio::time::timeout(Duration::from_secs(20), ev.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)))) => acks += 1,
                    Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => sent += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("rumqttc 3.1.1 client error: {e}"),
                    Err(_) => panic!("rumqttc 3.1.1: timed out with {acks} acks"),
                }
            }
            client.disconnect().await.expect("disconnect");
            let _ = tokio::time::timeout(Duration::from_secs(2), ev.poll()).await;
        }
        Proto::V5 => {
            use rumqttc::v5::mqttbytes::QoS;
            use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
            use rumqttc::v5::{AsyncClient, Event, MqttOptions};
            let mut o = MqttOptions::new(client_id, "127.0.0.1", addr.port());
            o.set_credentials("demo", password);
            o.set_keep_alive(Duration::from_secs(30));
            if let Some(t) = tls {
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(t),
                ));
            }
            let (client, mut ev) = AsyncClient::new(o, 64);
            // Queued from a task: the request channel holds 64, and only polling the
            // event loop below empties it.
            let queue = client.clone();
            let all = msgs.to_vec();
            tokio::spawn(async move {
                for m in all {
                    let qos = level(m.qos, [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
                    let props = PublishProperties {
                        user_properties: m.user,
                        ..Default::default()
                    };
                    queue
                        .publish_with_properties(m.topic, qos, false, m.payload, props)
                        .await
                        .expect("queue publish");
                }
            });
            let (mut acks, mut sent) = (0, 0);
            while acks < expected_acks || sent < msgs.len() {
                match tokio::time::timeout(Duration::from_secs(20), ev.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => {
                        assert_eq!(
                            a.reason,
                            rumqttc::v5::mqttbytes::v5::PubAckReason::Success,
                            "PUBACK reason"
                        );
                        acks += 1
                    }
                    Ok(Ok(Event::Incoming(Packet::PubComp(_)))) => acks += 1,
                    Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => sent += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("rumqttc 5 client error: {e}"),
                    Err(_) => panic!("rumqttc 5: timed out with {acks} acks"),
                }
            }
            client.disconnect().await.expect("disconnect");
            let _ = tokio::time::timeout(Duration::from_secs(2), ev.poll()).await;
        }
    }
}

/// Publishes one message with Debian's mosquitto_pub.
pub fn mosquitto_pub(addr: SocketAddr, proto: Proto, client_id: &str, password: &str, m: &Msg) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-i", client_id, "-u", "demo", "-P", password])
        .args(["-t", &m.topic, "-q", &m.qos.to_string()]);
    if m.payload.is_empty() {
        cmd.arg("-n");
    } else {
        cmd.args(["-m", &String::from_utf8_lossy(&m.payload)]);
    }
    if proto == Proto::V5 {
        cmd.args(["-V", "mqttv5"]);
        for (k, v) in &m.user {
            cmd.args(["-D", "publish", "user-property", k, v]);
        }
    }
    let out = cmd.output().expect(
        "mosquitto_pub is needed (Debian package mosquitto-clients; tests/setup.sh installs it)",
    );
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Publishes with Python paho-mqtt and waits for completion; returns the script's stdout.
pub fn paho_publish(
    addr: SocketAddr,
    proto: Proto,
    client_id: &str,
    password: &str,
    m: &Msg,
) -> String {
    let script = r#"
import sys, paho.mqtt.client as mqtt
port, proto, cid, pw, topic, qos, payload = sys.argv[1:8]
version = mqtt.MQTTv5 if proto == "5" else mqtt.MQTTv311
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=version)
c.username_pw_set("demo", pw)
c.connect("127.0.0.1", int(port), keepalive=30)
c.loop_start()
info = c.publish(topic, payload.encode(), qos=int(qos))
info.wait_for_publish(timeout=20)
assert info.is_published(), "not acknowledged"
c.disconnect()
c.loop_stop()
print("published", info.mid)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(addr.port().to_string())
        .arg(if proto == Proto::V5 { "5" } else { "3" })
        .args([client_id, password, &m.topic, &m.qos.to_string()])
        .arg(String::from_utf8_lossy(&m.payload).to_string())
        .output()
        .expect("python3 is needed");
    assert!(
        out.status.success(),
        "paho-mqtt publish failed (pip package paho-mqtt; tests/setup.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
