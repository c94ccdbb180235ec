//! Text for people: what `edge-agent journal stats` and `peek` print.

use std::fmt::Write;

use super::entry::Entry;
use super::stats::Stats;

/// `1.5 MiB`, `12 B`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `3d 4h`, `5m 2s`, `120ms`.
pub(crate) fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The `journal stats` text.
pub fn render_stats(s: &Stats) -> String {
    let mut out = String::new();
    let pct = if s.max_bytes == 0 {
        0.0
    } else {
        s.bytes as f64 * 100.0 / s.max_bytes as f64
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "journal      {}", s.path.display());
    let _ = writeln!(out, "file size    {}", bytes(s.file_bytes));
    let _ = writeln!(
        out,
        "waiting      {} entries, {} of {} quota ({pct:.1}%)",
        s.entries,
        bytes(s.bytes),
        bytes(s.max_bytes)
    );
    match (s.oldest_seq, s.oldest_age_ms) {
        (Some(seq), Some(a)) => {
            let _ = writeln!(out, "oldest       seq {seq}, received {} ago", age(a));
        }
        _ => {
            let _ = writeln!(out, "oldest       -");
        }
    }
    let _ = writeln!(out, "last seq     {}", s.last_seq);
    let _ = writeln!(out, "expired, not yet swept  {}", s.expired_pending);
    let _ = writeln!(out, "by priority:");
    for p in &s.per_priority {
        let _ = writeln!(
            out,
            "  {:<9} {:>10} entries {:>12}",
            p.priority.as_str(),
            p.entries,
            bytes(p.bytes)
        );
    }
    let _ = writeln!(out, "counters (since the journal was created):");
    for (name, value) in s.counters.iter() {
        let _ = writeln!(out, "  {name:<20} {value:>12}");
    }
    out
}

/// One `journal peek` line: seq, class, age, QoS, topic, size and a payload preview.
pub fn render_entry(e: &Entry, now_ms: u64) -> String {
    const PREVIEW: usize = 60;
    let preview = match std::str::from_utf8(&e.payload) {
        Ok(text) => {
            let mut p: String = text.chars().take(PREVIEW).collect();
            if text.chars().count() > PREVIEW {
                p.push('…');
            }
            format!("{p:?}")
        }
        Err(_) => format!("<{} binary bytes>", e.payload.len()),
    };
    format!(
        "{:>10} {:<8} {:>8} q{} {} ({}) {}",
        e.seq,
        e.priority.as_str(),
        age(now_ms.saturating_sub(e.received_ms)),
        e.qos.as_u8(),
        e.topic,
        bytes(e.payload.len() as u64),
        preview
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 * 1024 * 1024), "256.0 MiB");
        assert_eq!(age(120), "120ms");
        assert_eq!(age(61_000), "1m 1s");
        assert_eq!(age(90_000_000), "1d 1h");
    }
}
