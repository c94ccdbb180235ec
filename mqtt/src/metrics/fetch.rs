//! One HTTP GET to a local endpoint, for the `status` commands (hyper's HTTP/1 client
//! connection: the same crate as the server, no pool or TLS needed for loopback).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::Error;

/// Largest body read.
const MAX_BODY: usize = 4 << 20;

/// `GET http://addr/path`: the status code and the body. Fails when nothing answers
/// within `wait` (connection refused, timeout, not HTTP).
pub async fn get(addr: SocketAddr, path: &str, wait: Duration) -> Result<(u16, String), Error> {
    tokio::time::timeout(wait, get_now(addr, path))
        .await
        .map_err(|_| Error::Http(format!("no answer from {addr} within {wait:?}")))?
}

async fn get_now(addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let http = |e: hyper::Error| Error::Http(e.to_string());
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(conn);
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::Http(e.to_string()))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Error::Http(e.to_string()))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
    .await;
    driver.abort();
    result
}
