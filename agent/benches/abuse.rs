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

#[path = "../tests/support/floods.rs"]
mod floods;
#[path = "../tests/support/process.rs"]
mod process;
#[path = "../tests/support/spawned.rs"]
mod spawned;

use std::time::{Duration, Instant};

use floods::{
    delayed_will, dev_user, hour_session, offline_subscriber, paho_publish, persistent,
    wrong_passwords,
};
use rumqttc::v5::mqttbytes::QoS;
use spawned::{Agent, NO_PER_ADDRESS, PER_ADDRESS, served};
use test_support::raw::{connect_v311, connect5, first_reply};
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
    let users = dev_user();
    let (agent, _dir) = start(|t| format!("{t}{users}"));
    let codes = wrong_passwords(agent.addr, 300).await;
    let busy = codes.iter().filter(|c| **c == Some(0x89)).count();
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
        first_reply(agent.addr, &delayed_will(i)).await;
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

async fn offline_queues() -> Row {
    let (agent, _dir) = start(|t| t);
    for i in 0..10 {
        offline_subscriber(agent.addr, &format!("off{i}"), "big/#").await;
    }
    paho_publish(agent.addr, "big/{i}", 200, 200_000, false, 120);
    let after_flood = agent.peak_mib();
    // One session resumes: its queue is read in pages.
    let resume = persistent(agent.addr, "off0", Some(1 << 20));
    let (mut c, _) = test_support::v5::Client::connect(resume).await;
    let mut got = 0;
    while c.publish(Duration::from_secs(3)).await.is_some() {
        got += 1;
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
    paho_publish(agent.addr, "ret/{i}", 2000, 200_000, true, 120);
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
    first_reply(agent.addr, &connect5("keeper", hour_session(), None, None)).await;
    let mut refused = 0;
    for i in 0..5000 {
        let r = first_reply(
            agent.addr,
            &connect5(&format!("s{i}"), hour_session(), None, None),
        )
        .await;
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
        let _ = s.write_all(&connect_v311(&format!("legit{i}"), 0)).await;
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
