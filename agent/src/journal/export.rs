//! `journal export`: every unexpired entry as JSON Lines, in sequence order.
//!
//! One object per line: `seq`, `topic`, `qos`, `retain`, `priority`, `received_ms`,
//! `expires_ms`, `user_properties`, `payload_base64`, and `payload_utf8` when the payload
//! is valid UTF-8.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Journal;
use super::config::Priority;
use super::entry::{Cursor, Entry, ReadOrder};
use crate::error::{Error, Result};

/// Entries read per round trip to the journal thread.
const PAGE: usize = 1000;

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    topic: &'a str,
    qos: u8,
    retain: bool,
    priority: Priority,
    received_ms: u64,
    expires_ms: Option<u64>,
    user_properties: &'a [(String, String)],
    payload_base64: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_utf8: Option<&'a str>,
}

/// The JSON line (without newline) for `entry`.
pub(crate) fn line(entry: &Entry) -> Result<String> {
    let line = Line {
        seq: entry.seq,
        topic: &entry.topic,
        qos: entry.qos.as_u8(),
        retain: entry.retain,
        priority: entry.priority,
        received_ms: entry.received_ms,
        expires_ms: entry.expires_ms,
        user_properties: &entry.user_properties,
        payload_base64: STANDARD.encode(&entry.payload),
        payload_utf8: std::str::from_utf8(&entry.payload).ok(),
    };
    serde_json::to_string(&line).map_err(|e| Error::Export(e.into()))
}

pub(crate) async fn jsonl<W: AsyncWrite + Unpin>(journal: &Journal, out: &mut W) -> Result<u64> {
    let mut cursor = Cursor::start(ReadOrder::Fifo);
    let mut written = 0;
    loop {
        let page = journal.next_batch(cursor, PAGE).await?;
        if page.is_empty() {
            break;
        }
        let mut buf = String::new();
        for entry in &page {
            buf.push_str(&line(entry)?);
            buf.push('\n');
        }
        out.write_all(buf.as_bytes()).await.map_err(Error::Export)?;
        written += page.len() as u64;
        cursor.advance_past(&page);
    }
    out.flush().await.map_err(Error::Export)?;
    Ok(written)
}
