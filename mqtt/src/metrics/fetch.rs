//! One HTTP GET to a local endpoint, for the `status` commands.
//!
//! # Why hand-written
//! It asks our own endpoint on loopback, once: an HTTP/1.0 request (the server closes the
//! connection after the answer, so the body is everything up to EOF), a status line, a
//! blank line. hyper's client side costs more binary size than these lines on the armv7
//! gateway, where the agent must stay under 6 MB; the server side stays on hyper.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Error;

/// Largest answer read.
const MAX_ANSWER: u64 = 4 << 20;

/// `GET http://addr/path`: the status code and the body. Fails when nothing answers
/// within `wait` (connection refused, timeout, not HTTP).
pub async fn get(addr: SocketAddr, path: &str, wait: Duration) -> Result<(u16, String), Error> {
    tokio::time::timeout(wait, get_now(addr, path))
        .await
        .map_err(|_| Error::Http(format!("no answer from {addr} within {wait:?}")))?
}

async fn get_now(addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
    parse(&answer)
}

/// Splits an HTTP/1.x answer into its status code and body.
fn parse(answer: &[u8]) -> Result<(u16, String), Error> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Http("no end of headers in the answer".to_owned()))?;
    let status = head
        .lines()
        .next()
        .and_then(|line| {
            let mut words = line.split(' ');
            let version = words.next()?;
            version.starts_with("HTTP/1.").then_some(())?;
            words.next()?.parse::<u16>().ok()
        })
        .ok_or_else(|| Error::Http(format!("not an HTTP status line: {head:.60?}")))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_body_are_split_and_garbage_is_an_error() {
        let ok = parse(b"HTTP/1.0 503 Service Unavailable\r\ncontent-type: x\r\n\r\n{\"a\":1}\r\n");
        assert_eq!(ok.ok(), Some((503, "{\"a\":1}\r\n".to_owned())));
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse(b"").is_err());
    }
}
