//! What the workspace's tests share (a test-only crate: `edge-agent`, `cloud-bridge` and
//! `e2e` dev-depend on it; it depends on `mqtt` and third-party crates only). Modules:
//! - [`rocketmq`]: where the test RocketMQ runs (the one reader of `ROCKETMQ_*` and
//!   `tests/rocketmq/run/env`) and the plain Java client (`rocketmq.sh tool`): consume,
//!   produce, max offset;
//! - [`certs`]: the test PKI (a CA, a server certificate for 127.0.0.1, client
//!   certificates from it and from an untrusted CA);
//! - [`client`]: one rumqttc test client for MQTT 3.1.1 ([`v4`]) and 5 ([`v5`]) that hands
//!   every incoming packet to a channel;
//! - [`raw`]: raw MQTT bytes and a raw TCP client for exact packets and broken input;
//! - [`process`]: a child process whose stderr log is kept and whose announced addresses
//!   are read from it;
//! - [`metrics`]: scraping an OpenMetrics endpoint into samples;
//! - here: [`repo_root`], [`free_port`], [`unique`], [`crash_rng`].
//!
//! Everything it starts or talks to is on loopback.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod certs;
pub mod client;
pub mod metrics;
pub mod process;
pub mod raw;
pub mod rocketmq;

pub use client::{v4, v5};

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long a test waits for a packet it expects (a CONNACK, a SUBACK).
pub const WAIT: Duration = Duration::from_secs(10);

/// The workspace root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A free loopback port (bound and released: a tiny race other tests never hit, as
/// every test picks its own).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `prefix` and 8 hex digits, distinct for every call of this process and random across
/// processes, so that tests sharing one RocketMQ (first-level topics, client ids, groups)
/// do not see each other: letters and digits only.
pub fn unique(prefix: &str) -> String {
    static BASE: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = *BASE.get_or_init(rand::random::<u32>);
    let n = base.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{prefix}{n:08x}")
}

/// The random source of a test that kills processes at random points: seeded from
/// `CRASH_SEED` when set (to replay a failure), else at random. The seed is printed, so a
/// failing run's output says how to replay it.
pub fn crash_rng(test: &str) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{test}: kill points from seed {seed} (replay: CRASH_SEED={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}
