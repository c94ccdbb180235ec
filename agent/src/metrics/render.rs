//! What `edge-agent status` prints for a person at the gateway: one line per subject,
//! from the running agent's [`Snapshot`].

use std::fmt::Write;

use super::Snapshot;
use crate::journal::{human_age, human_bytes};

/// The status text; `at` is the endpoint that answered.
pub fn render_status(s: &Snapshot, at: &str) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "edge-agent {} running (metrics at {at})", s.version);
    let listeners: Vec<String> = s
        .listeners
        .iter()
        .map(|l| format!("{} {}", l.name, l.addr))
        .collect();
    let _ = writeln!(out, "listeners    {}", listeners.join(", "));
    let c = &s.server;
    let _ = writeln!(
        out,
        "connections  {} open, {} MQTT clients; {} accepted, {} refused at the limit",
        c.connections, c.clients_connected, c.connections_accepted, c.connections_refused
    );
    let _ = writeln!(out, "sessions     {}", s.broker.sessions);
    let [r0, r1, r2] = c.publish_received;
    let [s0, s1, s2] = c.publish_sent;
    let _ = writeln!(
        out,
        "publishes    in {} (QoS 0/1/2: {r0}/{r1}/{r2}), out {} ({s0}/{s1}/{s2}), refused {}",
        r0 + r1 + r2,
        s0 + s1 + s2,
        c.publish_refused
    );
    match (&s.journal, &s.journal_error) {
        (Some(j), _) => {
            let oldest = j
                .oldest_age_ms
                .map_or("-".to_owned(), |a| format!("{} ago", human_age(a)));
            let _ = writeln!(
                out,
                "journal      {} entries, {} of {} quota, oldest {oldest}",
                j.entries,
                human_bytes(j.bytes),
                human_bytes(j.max_bytes)
            );
            let avg = |micros: u64, n: u64| micros.checked_div(n).unwrap_or(0);
            let _ = writeln!(
                out,
                "             {} commits (avg {} µs), {} WAL flushes (avg {} µs)",
                j.commits,
                avg(j.commit_micros, j.commits),
                j.wal_flushes,
                avg(j.wal_flush_micros, j.wal_flushes)
            );
            if j.wal_flush_failed {
                let _ = writeln!(
                    out,
                    "             a WAL flush FAILED: appends are refused until a restart"
                );
            }
        }
        (None, e) => {
            let _ = writeln!(
                out,
                "journal      unreadable: {}",
                e.as_deref().unwrap_or("?")
            );
        }
    }
    let drops: Vec<String> = s
        .drops()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let drops = if drops.is_empty() {
        "none".to_owned()
    } else {
        drops.join(", ")
    };
    let _ = writeln!(out, "drops        {drops}");
    let u = &s.uplink;
    let _ = write!(
        out,
        "uplink       {}, {} in flight, {} sent, {} acked",
        u.state, u.in_flight, u.sent, u.acked
    );
    match &u.last_error {
        Some(e) => {
            let _ = writeln!(out, " (last error: {e})");
        }
        None => out.push('\n'),
    }
    if u.journal_read.count() > 0 || u.puback.count() > 0 {
        // The drain's stages (issue #17): where a slow drain spends its time.
        let _ = writeln!(
            out,
            "             window {}/{} held; avg journal read {:.2} ms, PUBACK {:.2} ms, confirm {:.2} ms",
            u.window_used,
            u.window,
            u.journal_read.average_ms(),
            u.puback.average_ms(),
            u.confirm.average_ms()
        );
    }
    if s.sensors.is_empty() {
        let _ = writeln!(out, "sensors      none");
    }
    for sensor in &s.sensors {
        let errors: Vec<String> = sensor
            .errors
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let errors = if errors.is_empty() {
            "no errors".to_owned()
        } else {
            format!("errors: {}", errors.join(", "))
        };
        let _ = writeln!(
            out,
            "sensor       {} ({}): {} readings, {errors}",
            sensor.id, sensor.state, sensor.readings
        );
    }
    out
}
