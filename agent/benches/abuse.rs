//! Abuse benchmark (prints figures; not a test): the floods of the security audit of
//! issue #20, each against a fresh `edge-agent` (release build, its own process, the
//! shipped defaults), printing the agent's peak RSS (VmHWM), `broker.db` + WAL on disk
//! after the flood, and whether a legitimate client was still served. The figures go to
//! the "Resource limits" table of `docs/resource-limits.md`.
//!
//! Each flood but the idle-sockets one runs with the per-address bounds off (one address
//! sends the whole flood here, and those bounds would otherwise stop it before it
//! reaches the bound under test). Every loop is bounded; all traffic is on loopback.
//! Run with `cargo bench -p edge-agent --bench abuse`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../tests/support/spawned.rs"]
mod spawned;

use std::process::Command;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectProperties, LastWill, LastWillProperties, Login};
use spawned::{Agent, NO_PER_ADDRESS, PER_ADDRESS, connect5, first_reply, served};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Row {
    flood: &'static str,
    peak_mib: u64,
    db_mib: f64,
    served: bool,
    note: String,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("abuse: run it with `cargo bench -p edge-agent --bench abuse`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(async {
        vec![
            passwords().await,
            wills().await,
            offline_queues().await,
            retained().await,
            sessions().await,
            idle_sockets().await,
            subscriptions().await,
        ]
    });
    println!("\n| flood | peak RSS | broker.db + WAL | another client served | bound that held |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} MiB | {:.1} MiB | {} | {} |",
            r.flood,
            r.peak_mib,
            r.db_mib,
            if r.served { "yes" } else { "no" },
            r.note
        );
    }
}

fn start(edit: impl FnOnce(String) -> String) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), edit);
    (agent, dir)
}

fn row(flood: &'static str, agent: &Agent, served: bool, note: String) -> Row {
    let r = Row {
        flood,
        peak_mib: agent.peak_mib(),
        db_mib: agent.db_bytes() as f64 / (1 << 20) as f64,
        served,
        note,
    };
    eprintln!("{flood}: peak {} MiB, db {:.1} MiB", r.peak_mib, r.db_mib);
    r
}

async fn passwords() -> Row {
    let hash = edge_agent::auth::hash_password("right").unwrap();
    let (agent, _dir) =
        start(|t| format!("{t}\n[[auth.users]]\nname = \"dev\"\npassword_hash = \"{hash}\"\n"));
    let wrong = connect5(
        "flood",
        ConnectProperties::new(),
        None,
        Some(Login::new("dev", "wrong")),
    );
    let mut flood = Vec::new();
    for _ in 0..300 {
        let (addr, bytes) = (agent.addr, wrong.clone());
        flood.push(tokio::spawn(async move { first_reply(addr, &bytes).await }));
    }
    let mut busy = 0;
    for f in flood {
        if f.await.unwrap().get(3) == Some(&0x89) {
            busy += 1;
        }
    }
    let ok = served(agent.addr, "keeper", Some(("dev", "right"))).await;
    row(
        "300 CONNECTs at once, known user, wrong password",
        &agent,
        ok,
        format!("auth.max_concurrent_checks = 2: {busy} answered 0x89 server busy"),
    )
}

async fn wills() -> Row {
    let (agent, _dir) = start(|t| t.replace("max_sessions = 1000", "max_sessions = 3000"));
    for i in 0..2000 {
        let mut props = ConnectProperties::new();
        props.session_expiry_interval = Some(3600);
        let will = LastWill::new(
            format!("will/{i}"),
            vec![7u8; 60_000],
            QoS::AtLeastOnce,
            false,
            Some(LastWillProperties {
                delay_interval: Some(3600),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            }),
        );
        first_reply(
            agent.addr,
            &connect5(&format!("w{i}"), props, Some(will), None),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = served(agent.addr, "keeper", None).await;
    let note = format!(
        "sessions.max_pending_will_bytes = 4 MiB: {} held, {} not held",
        agent.metric("edge_agent_wills_held"),
        agent.metric("edge_agent_wills_not_held_total")
    );
    row(
        "2,000 dropped connections with a 60 KB will, delay 1 h",
        &agent,
        ok,
        note,
    )
}

fn paho_publish(addr: std::net::SocketAddr, topic: &str, n: usize, size: usize, retain: bool) {
    let script = r#"
import sys, paho.mqtt.client as mqtt
port, topic, n, size, retain = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-pub", protocol=mqtt.MQTTv5)
c.max_inflight_messages_set(16)
c.connect("127.0.0.1", port)
c.loop_start()
infos = [c.publish(topic.replace("{i}", str(i)), b"x" * size, qos=1, retain=retain) for i in range(n)]
for i in infos:
    i.wait_for_publish(120)
c.disconnect()
c.loop_stop()
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(addr.port().to_string())
        .arg(topic)
        .arg(n.to_string())
        .arg(size.to_string())
        .arg(if retain { "1" } else { "0" })
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn persistent(addr: std::net::SocketAddr, id: &str) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", addr.port());
    o.set_clean_start(false);
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(3600);
    props.max_packet_size = Some(1 << 20);
    o.set_connect_properties(props);
    o
}

async fn offline_queues() -> Row {
    let (agent, _dir) = start(|t| t);
    for i in 0..10 {
        let (c, mut ev) =
            rumqttc::v5::AsyncClient::new(persistent(agent.addr, &format!("off{i}")), 10);
        c.subscribe("big/#", QoS::AtLeastOnce).await.unwrap();
        loop {
            if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_)) =
                ev.poll().await.unwrap()
            {
                break;
            }
        }
        c.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(1), ev.poll()).await;
    }
    paho_publish(agent.addr, "big/{i}", 200, 200_000, false);
    let after_flood = agent.peak_mib();
    // One session resumes: its queue is read in pages.
    let (_c, mut ev) = rumqttc::v5::AsyncClient::new(persistent(agent.addr, "off0"), 10);
    let mut got = 0;
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(3), ev.poll()).await {
        if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(_)) = e {
            got += 1;
        }
    }
    let ok = served(agent.addr, "keeper", None).await;
    row(
        "10 offline sessions x 200 messages of 200 KB, then one resumes",
        &agent,
        ok,
        format!(
            "sessions.max_queued_bytes = 4 MiB per session ({} dropped); peak {after_flood} MiB before the resume, {got} messages resumed",
            agent.metric("edge_agent_dropped_total{reason=\"queue_full\"}")
        ),
    )
}

async fn retained() -> Row {
    let (agent, _dir) = start(|t| t);
    paho_publish(agent.addr, "ret/{i}", 2000, 200_000, true);
    let ok = served(agent.addr, "keeper", None).await;
    let note = format!(
        "sessions.max_retained_bytes = 8 MiB: {} kept, {} refused",
        agent.metric("edge_agent_retained"),
        agent.metric("edge_agent_refused_total{reason=\"retained\"}")
    );
    row("2,000 retained messages of 200 KB", &agent, ok, note)
}

async fn sessions() -> Row {
    let (agent, _dir) = start(|t| t);
    // The keeper's session exists before the flood (new ones are what the bound refuses).
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(3600);
    first_reply(agent.addr, &connect5("keeper", props, None, None)).await;
    let mut refused = 0;
    for i in 0..5000 {
        let mut props = ConnectProperties::new();
        props.session_expiry_interval = Some(3600);
        let r = first_reply(agent.addr, &connect5(&format!("s{i}"), props, None, None)).await;
        if r.get(3) == Some(&0x97) {
            refused += 1;
        }
    }
    let ok = served(agent.addr, "keeper", None).await;
    row(
        "5,000 persistent sessions",
        &agent,
        ok,
        format!("sessions.max_sessions = 1000: {refused} refused with 0x97"),
    )
}

async fn idle_sockets() -> Row {
    // The shipped defaults, per-address bounds on.
    let (agent, _dir) = start(|t| {
        t.replace(NO_PER_ADDRESS.0, PER_ADDRESS.0)
            .replace(NO_PER_ADDRESS.1, PER_ADDRESS.1)
    });
    let mut idle = Vec::new();
    for _ in 0..5000 {
        if let Ok(s) = TcpStream::connect(agent.addr).await {
            idle.push(s);
        }
    }
    let mut ok = 0;
    let started = Instant::now();
    for i in 0..30 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let Ok(mut s) = sock.connect(agent.addr).await else {
            continue;
        };
        let mut c = vec![0x10, 0];
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0];
        let id = format!("legit{i}");
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id.as_bytes());
        c[1] = body.len() as u8;
        c.extend(body);
        let _ = s.write_all(&c).await;
        let mut connack = [0u8; 4];
        if tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut connack))
            .await
            .is_ok_and(|r| r.is_ok())
            && connack[3] == 0
        {
            ok += 1;
        }
    }
    let _ = started;
    let lines = agent.log_lines("closed at accept");
    drop(idle);
    row(
        "5,000 idle sockets from one address",
        &agent,
        ok == 30,
        format!(
            "limits.max_connections_per_address = 64, accept_rate_per_address = 20: a client from another address got in {ok}/30; {lines} log line(s)"
        ),
    )
}

async fn subscriptions() -> Row {
    let (agent, _dir) = start(|t| t);
    let (c, mut ev) = rumqttc::v5::AsyncClient::new(
        rumqttc::v5::MqttOptions::new("subs", "127.0.0.1", agent.addr.port()),
        100,
    );
    let pump = tokio::spawn(async move {
        let mut acks = 0;
        while acks < 1000 {
            match ev.poll().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_))) => {
                    acks += 1
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    // 100,000 filters in 1,000 SUBSCRIBE packets.
    for b in 0..1000 {
        let filters = (0..100).map(|i| {
            rumqttc::v5::mqttbytes::v5::Filter::new(format!("s/{b}/{i}"), QoS::AtMostOnce)
        });
        c.subscribe_many(filters).await.unwrap();
    }
    let _ = tokio::time::timeout(Duration::from_secs(120), pump).await;
    let ok = served(agent.addr, "keeper", None).await;
    row(
        "100,000 subscriptions from one client",
        &agent,
        ok,
        format!(
            "limits.max_subscriptions = 100: {} refused",
            agent.metric("edge_agent_refused_total{reason=\"subscriptions\"}")
        ),
    )
}
