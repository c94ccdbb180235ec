//! systemd service notifications for both binaries (`Type=notify` units in `systemd/`).
//!
//! `READY=1` once listeners are bound and storage is open, `WATCHDOG=1` at half of the
//! unit's `WatchdogSec` (systemd passes it as `$WATCHDOG_USEC`), `STOPPING=1` when a
//! graceful stop begins. The `sd-notify` crate speaks the protocol (a datagram to
//! `$NOTIFY_SOCKET`) without `unsafe`; without `$NOTIFY_SOCKET` (not under systemd) every
//! call does nothing. A failed notification is logged, never fatal: the service still runs,
//! and systemd reports the missing readiness or watchdog ping itself.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "systemd notification not sent");
    }
}

/// Tells systemd that start-up is finished (`READY=1`) with a one-line status.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The status line for [`ready`]: `<service> running; listening on <name> <addr>, ...`
/// (shown by `systemctl status`).
pub fn listening_status<'a>(
    service: &str,
    bound: impl IntoIterator<Item = (&'a str, std::net::SocketAddr)>,
) -> String {
    let list: Vec<String> = bound
        .into_iter()
        .map(|(name, addr)| format!("{name} {addr}"))
        .collect();
    format!("{service} running; listening on {}", list.join(", "))
}

/// Tells systemd that a graceful stop has begun (`STOPPING=1`).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC` (when it is meant for this
/// process), as sd_watchdog_enabled(3) advises; `None` when no watchdog is enabled.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Pings the watchdog (`WATCHDOG=1`) at [`watchdog_interval`] until `cancel`; returns at
/// once when no watchdog is enabled. It runs on the service's runtime, so a runtime that
/// stops making progress stops the pings and systemd restarts the service.
pub async fn run_watchdog(cancel: CancellationToken) {
    let Some(every) = watchdog_interval() else {
        return;
    };
    debug!(?every, "systemd watchdog enabled");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => send(&[NotifyState::Watchdog]),
            _ = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_names_every_listener() {
        let a = "127.0.0.1:1883".parse().unwrap();
        let b = "[::1]:8080".parse().unwrap();
        assert_eq!(
            listening_status("edge-agent", [("tcp", a), ("ws", b)]),
            "edge-agent running; listening on tcp 127.0.0.1:1883, ws [::1]:8080"
        );
    }
}
