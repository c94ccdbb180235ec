//! Subscribing clients for the read-path tests: rumqttc (3.1.1 and 5), mosquitto_sub and
//! paho-mqtt, each collecting what it receives.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;

use super::clients::{Proto, level};

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub dup: bool,
    pub retain: bool,
}

/// A rumqttc subscriber running in a task.
pub struct Sub {
    pub rx: mpsc::Receiver<Received>,
    pub task: tokio::task::JoinHandle<()>,
    /// SUBACK return codes (3.1.1 code or MQTT 5 reason as a byte, 0x80+ = refused).
    pub suback: Vec<u8>,
}

impl Sub {
    pub async fn next(&mut self, wait: Duration) -> Option<Received> {
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Collects messages until `n` arrived or `wait` passed.
    pub async fn collect(&mut self, n: usize, wait: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => out.push(m),
                _ => break,
            }
        }
        out
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects, subscribes to `filters` at `qos`, waits for the SUBACK, then collects.
pub async fn rumqttc_subscribe(
    addr: SocketAddr,
    proto: Proto,
    client_id: &str,
    password: &str,
    clean: bool,
    filters: &[(&str, u8)],
) -> Sub {
    let (tx, rx) = mpsc::channel(10_000);
    let (ack_tx, mut ack_rx) = mpsc::channel(1);
    let filters: Vec<(String, u8)> = filters.iter().map(|(f, q)| (f.to_string(), *q)).collect();
    let task = match proto {
        Proto::V311 => {
            use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
            let mut o = MqttOptions::new(client_id, "127.0.0.1", addr.port());
            o.set_credentials("demo", password);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_clean_session(clean);
            let (client, mut ev) = AsyncClient::new(o, 64);
            tokio::spawn(async move {
                let mut subscribed = false;
                loop {
                    match ev.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) if !subscribed => {
                            subscribed = true;
                            if filters.is_empty() {
                                let _ = ack_tx.send(Vec::new()).await;
                            }
                            let many: Vec<_> = filters
                                .iter()
                                .map(|(f, q)| {
                                    let qos = level(
                                        *q,
                                        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce],
                                    );
                                    rumqttc::SubscribeFilter::new(f.clone(), qos)
                                })
                                .collect();
                            if !many.is_empty() {
                                let _ = client.subscribe_many(many).await;
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(a))) => {
                            let codes = a
                                .return_codes
                                .iter()
                                .map(|c| match c {
                                    rumqttc::SubscribeReasonCode::Success(q) => *q as u8,
                                    rumqttc::SubscribeReasonCode::Failure => 0x80,
                                })
                                .collect::<Vec<u8>>();
                            let _ = ack_tx.send(codes).await;
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let _ = tx
                                .send(Received {
                                    topic: p.topic.clone(),
                                    payload: p.payload.to_vec(),
                                    qos: p.qos as u8,
                                    dup: p.dup,
                                    retain: p.retain,
                                })
                                .await;
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
        }
        Proto::V5 => {
            use rumqttc::v5::mqttbytes::QoS;
            use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
            use rumqttc::v5::{AsyncClient, Event, MqttOptions};
            let mut o = MqttOptions::new(client_id, "127.0.0.1", addr.port());
            o.set_credentials("demo", password);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_clean_start(clean);
            if !clean {
                o.set_session_expiry_interval(Some(3600));
            }
            let (client, mut ev) = AsyncClient::new(o, 64);
            tokio::spawn(async move {
                let mut subscribed = false;
                loop {
                    match ev.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) if !subscribed => {
                            subscribed = true;
                            if filters.is_empty() {
                                let _ = ack_tx.send(Vec::new()).await;
                            }
                            let many: Vec<_> = filters
                                .iter()
                                .map(|(f, q)| {
                                    let qos = level(
                                        *q,
                                        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce],
                                    );
                                    rumqttc::v5::mqttbytes::v5::Filter::new(f.clone(), qos)
                                })
                                .collect();
                            if !many.is_empty() {
                                let _ = client.subscribe_many(many).await;
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(a))) => {
                            let codes = a
                                .return_codes
                                .iter()
                                .map(|c| match c {
                                    SubscribeReasonCode::Success(q) => *q as u8,
                                    SubscribeReasonCode::TopicFilterInvalid => 0x8F,
                                    SubscribeReasonCode::NotAuthorized => 0x87,
                                    SubscribeReasonCode::QuotaExceeded => 0x97,
                                    SubscribeReasonCode::ImplementationSpecific => 0x83,
                                    _ => 0x80,
                                })
                                .collect::<Vec<u8>>();
                            let _ = ack_tx.send(codes).await;
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let _ = tx
                                .send(Received {
                                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                    payload: p.payload.to_vec(),
                                    qos: p.qos as u8,
                                    dup: p.dup,
                                    retain: p.retain,
                                })
                                .await;
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
        }
    };
    // The SUBACK, or the CONNACK when there is nothing to subscribe to.
    let suback = tokio::time::timeout(Duration::from_secs(20), ack_rx.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    Sub { rx, task, suback }
}

/// A third-party subscriber process (mosquitto_sub or paho) printing one line per message.
pub struct External {
    pub child: Child,
}

impl External {
    /// mosquitto_sub: prints `topic payload` lines; exits after `count` messages.
    pub fn mosquitto(
        addr: SocketAddr,
        proto: Proto,
        client_id: &str,
        password: &str,
        filter: &str,
        qos: u8,
        count: usize,
    ) -> External {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["-i", client_id, "-u", "demo", "-P", password])
            .args([
                "-t",
                filter,
                "-q",
                &qos.to_string(),
                "-C",
                &count.to_string(),
                "-W",
                "60",
                "-v",
            ]);
        if proto == Proto::V5 {
            cmd.args(["-V", "mqttv5"]);
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients)");
        External { child }
    }

    /// paho-mqtt: prints `topic payload qos` lines; exits after `count` messages.
    pub fn paho(
        addr: SocketAddr,
        proto: Proto,
        client_id: &str,
        password: &str,
        filter: &str,
        qos: u8,
        count: usize,
    ) -> External {
        let script = r#"
import sys, time, paho.mqtt.client as mqtt
port, proto, cid, pw, flt, qos, count = sys.argv[1:8]
count = int(count)
version = mqtt.MQTTv5 if proto == "5" else mqtt.MQTTv311
got = []
def on_connect(c, u, f, rc, p=None):
    c.subscribe(flt, qos=int(qos))
def on_subscribe(c, u, mid, codes, p=None):
    print("SUBACK", flush=True)
def on_message(c, u, m):
    got.append(m)
    print(m.topic, m.payload.decode(), m.qos, flush=True)
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=version)
c.username_pw_set("demo", pw)
c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.on_message = on_message
c.connect("127.0.0.1", int(port), keepalive=30)
c.loop_start()
deadline = time.time() + 60
while len(got) < count and time.time() < deadline:
    time.sleep(0.05)
c.disconnect()
c.loop_stop()
sys.exit(0 if len(got) >= count else 1)
"#;
        let child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(addr.port().to_string())
            .arg(if proto == Proto::V5 { "5" } else { "3" })
            .args([
                client_id,
                password,
                filter,
                &qos.to_string(),
                &count.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 with paho-mqtt");
        External { child }
    }

    /// Waits for the process and returns its stdout lines (panics on failure).
    pub fn lines(self) -> Vec<String> {
        let out = self.child.wait_with_output().expect("subscriber process");
        assert!(
            out.status.success(),
            "subscriber failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("SUBACK"))
            .map(str::to_owned)
            .collect()
    }
}
