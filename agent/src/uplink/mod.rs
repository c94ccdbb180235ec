//! The uplink: an MQTT 5 client of cloud-bridge (TLS with a pinned CA, optional mutual
//! TLS) that drains the journal to the cloud and brings cloud messages down.
//!
//! # Guarantees
//! - An entry leaves the journal only after the bridge acknowledged it (PUBACK success,
//!   which cloud-bridge sends only after RocketMQ stored it). Everything else is sent
//!   again on the next connection, so delivery is at least once; duplicates happen only
//!   for what was in flight (at most `window` messages: an entry holds its slot until its
//!   deletion is committed, and flushed with `synchronous = full`) when a connection or
//!   the agent died, or (with `full`) the power was cut, and they carry the same stable
//!   id: user property `msg-key` = `{gateway}:{journal seq}`, which the bridge puts in
//!   the RocketMQ KEYS.
//! - Order per topic: one connection, entries sent in journal order (`fifo`), and the
//!   bridge stores one connection's publishes in order. Under `live-first`, live traffic
//!   may overtake the backlog (see [`config::DrainPolicy`]).
//! - Downlink messages are acknowledged to the bridge only after
//!   [`LocalBroker::publish`] took them (queued for every matching local subscriber,
//!   persistent sessions included); they are not journaled, so they never go back up.
//! - Reconnects back off exponentially with jitter (`backoff_min_ms` … `backoff_max_ms`);
//!   a refusal of our credentials or certificates, or of the bridge's certificate, waits
//!   the longest delay each time, says why in the log (error level) and in
//!   [`UplinkStatus`], and loses nothing.
//!
//! # Tasks
//! The connection loop (`link.rs`, the I/O driver of the protocol core
//! `mqtt::protocol::ClientCore`), a journal reader per connection (`feeder.rs`), a
//! downlink task per connection, and one confirmer that deletes acknowledged entries in
//! batches. All are bounded: the reader reads ahead at most `max(window, 512)` entries,
//! the downlink holds `downlink.window` messages.
//!
//! # Stage figures
//! [`UplinkStatus`] times each stage of a drain (journal reads, PUBLISH to PUBACK,
//! PUBACK to the confirm's answer) and shows the window's slots held; they are in
//! `/metrics` as `edge_agent_uplink_*_seconds` histograms (docs/operating.md).

pub mod config;
mod feeder;
mod link;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Local ↔ cloud topic names (a module of its own: the broker checks them too).
pub use crate::topic_map::{self, TopicMap, Unsendable};
pub use config::{DownlinkConfig, DrainPolicy, TopicRule, UplinkConfig, UplinkTls};
pub use link::{DOWNLINK_PUBLISHER, MSG_KEY};
pub use status::{LinkState, UplinkStatus};

use crate::broker::LocalBroker;
use crate::error::Result;
use crate::journal::Journal;
use link::{Ctx, Failure};

/// Starts the uplink when `[uplink] bridge` is set (else the status says `disabled` and
/// messages wait in the journal). Its tasks run in `tracker` until `cancel`.
pub fn start(
    uplink: &UplinkConfig,
    downlink: &DownlinkConfig,
    journal: Journal,
    broker: LocalBroker,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<Arc<UplinkStatus>> {
    let status = Arc::new(UplinkStatus::default());
    let Some(bridge) = uplink.bridge.clone() else {
        status.set_state(LinkState::Disabled);
        return Ok(status);
    };
    let tls = uplink.client_tls()?.map(TlsConnector::from);
    // Every batch holds at least one slot: room for `window` batches means a link never
    // waits to hand one over.
    let window = usize::from(uplink.window.max(1));
    let (confirm, confirm_rx) = mpsc::channel(window);
    let slots = Arc::new(tokio::sync::Semaphore::new(window));
    status.set_window(window, slots.clone());
    tracker.spawn(confirmer(
        journal.clone(),
        confirm_rx,
        status.clone(),
        cancel.clone(),
    ));
    let ctx = Ctx {
        gateway: uplink.gateway(),
        client_id: uplink.client(),
        map: TopicMap::new(uplink.rules()),
        cfg: uplink.clone(),
        down: downlink.clone(),
        journal,
        broker,
        status: status.clone(),
        tls,
        confirm,
        slots,
    };
    tracing::info!(%bridge, client_id = %ctx.client_id, gateway = %ctx.gateway, tls = ctx.tls.is_some(), "uplink starting");
    tracker.spawn(run(ctx, cancel));
    Ok(status)
}

/// A connection that lasted this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(10);

fn backoff(cfg: &UplinkConfig) -> impl Iterator<Item = Duration> {
    let (min, max) = cfg.backoff();
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Connects, runs, and reconnects until `cancel`.
async fn run(ctx: Ctx, cancel: CancellationToken) {
    let status = ctx.status.clone();
    let (_, longest) = ctx.cfg.backoff();
    let mut delays = backoff(&ctx.cfg);
    loop {
        status.set_state(LinkState::Connecting);
        let outcome = tokio::select! {
            _ = cancel.cancelled() => break,
            c = link::connect(&ctx) => c,
        };
        let failure = match outcome {
            Ok((conn, ack)) => {
                status.set_state(LinkState::Connected);
                status.set_error(None);
                UplinkStatus::add(&status.connects, 1);
                tracing::info!(session_present = ack.session_present, "uplink connected");
                let connected = tokio::time::Instant::now();
                let outcome = link::run(&ctx, conn, ack, &cancel).await;
                // A connection that failed at once (a bridge that accepts and then
                // refuses every message) keeps backing off; only a healthy one resets.
                if connected.elapsed() >= HEALTHY {
                    delays = backoff(&ctx.cfg);
                }
                match outcome {
                    Ok(()) => break,
                    Err(f) => f,
                }
            }
            Err(f) => f,
        };
        UplinkStatus::add(&status.failures, 1);
        status.set_error(Some(failure.to_string()));
        let wait = match &failure {
            Failure::Refused(why) => {
                status.set_state(LinkState::Refused);
                tracing::error!(reason = %why, retry_in = ?longest, "uplink refused");
                longest
            }
            Failure::Transient(why) => {
                status.set_state(LinkState::Backoff);
                let wait = delays.next().unwrap_or(longest);
                tracing::warn!(reason = %why, retry_in = ?wait, "uplink down");
                wait
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    status.set_state(LinkState::Stopped);
}

/// Longest wait between two tries of a failed confirm.
const CONFIRM_RETRY_MAX: Duration = Duration::from_secs(5);

/// Deletes acknowledged entries from the journal, a batch at a time, and then gives
/// their window slots back to the link. A failed confirm is tried again (doubling the
/// wait up to [`CONFIRM_RETRY_MAX`]) with the slots still held, so nothing more is sent
/// while deletions fail; once the journal is closed, or at shutdown, the entries stay
/// in the journal and are sent again later (duplicates, not losses). Each confirmed
/// entry's wait from its PUBACK is recorded in [`UplinkStatus::confirm`].
async fn confirmer(
    journal: Journal,
    mut rx: mpsc::Receiver<link::Acked>,
    status: Arc<UplinkStatus>,
    cancel: CancellationToken,
) {
    while let Some(first) = rx.recv().await {
        let mut seqs = first.seqs;
        let mut acked_at = first.acked_at;
        let mut slots = vec![first.slots];
        while let Ok(more) = rx.try_recv() {
            seqs.extend(more.seqs);
            acked_at.extend(more.acked_at);
            slots.push(more.slots);
        }
        let mut wait = Duration::from_millis(100);
        loop {
            match journal.confirm(&seqs).await {
                Ok(_) => {
                    let now = std::time::Instant::now();
                    for at in &acked_at {
                        status.confirm.observe(now.saturating_duration_since(*at));
                    }
                    break;
                }
                Err(crate::error::Error::Closed) => break,
                Err(e) => {
                    tracing::warn!(error = %e, entries = seqs.len(), retry_in = ?wait, "uplink: confirming acknowledged entries failed; nothing more is sent until it works");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(CONFIRM_RETRY_MAX);
        }
        drop(slots);
    }
}
