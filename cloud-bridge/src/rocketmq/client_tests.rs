//! Unit tests of the client and its connections against a fake server on 127.0.0.1:0.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Encoder};

use super::*;
use crate::rocketmq::command::{FLAG_RESPONSE, RemotingCodec};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How the fake server treats a connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers batches of `n` requests in reverse order, echoing field `n` and the code.
    ReverseBatches(usize),
    /// Answers one request, then closes the connection.
    OneThenClose,
    /// Never answers.
    Silent,
    /// Answers with garbage.
    Garbage,
}

async fn serve(behaviour: Behaviour) -> Result<String, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(handle(socket, behaviour));
        }
    });
    Ok(addr)
}

async fn handle(mut socket: TcpStream, behaviour: Behaviour) -> Result<(), crate::Error> {
    let mut codec = RemotingCodec::default();
    let mut buf = BytesMut::new();
    let mut batch = Vec::new();
    loop {
        while let Some(request) = codec.decode(&mut buf)? {
            batch.push(request);
        }
        let ready = match behaviour {
            Behaviour::ReverseBatches(n) => batch.len() >= n,
            Behaviour::OneThenClose => !batch.is_empty(),
            Behaviour::Silent => false,
            Behaviour::Garbage => !batch.is_empty(),
        };
        if ready {
            if matches!(behaviour, Behaviour::Garbage) {
                socket
                    .write_all(&[0, 0, 0, 6, 0, 0, 0, 2, b'{', b'x'])
                    .await?;
                return Ok(());
            }
            let mut out = BytesMut::new();
            for request in batch.drain(..).rev() {
                let mut response = RemotingCommand::request(request.code);
                response.flag = FLAG_RESPONSE;
                response.opaque = request.opaque;
                if let Some(n) = request.ext("n") {
                    response = response.field("n", n.to_owned());
                }
                codec.encode(&response, &mut out)?;
            }
            socket.write_all(&out).await?;
            if matches!(behaviour, Behaviour::OneThenClose) {
                return Ok(());
            }
        }
        if socket.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

fn client() -> Client {
    Client::new(ClientConfig {
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    })
}

#[tokio::test]
async fn out_of_order_responses_reach_their_callers() -> TestResult {
    let addr = serve(Behaviour::ReverseBatches(10)).await?;
    let client = client();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let client = client.clone();
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let request = RemotingCommand::request(100 + i).field("n", i.to_string());
            client.invoke(&addr, request, Duration::from_secs(5)).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let response = task.await??;
        assert_eq!(response.ext("n"), Some(i.to_string().as_str()));
        assert_eq!(response.code, 100 + i as i32);
    }
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn timeout_then_close_releases_everything() -> TestResult {
    let addr = serve(Behaviour::Silent).await?;
    let client = client();
    let got = client
        .invoke(
            &addr,
            RemotingCommand::request(1),
            Duration::from_millis(50),
        )
        .await;
    assert!(matches!(got, Err(crate::Error::Timeout)), "{got:?}");
    // A waiting caller is released by close, and close waits for the tasks.
    let waiting = {
        let client = client.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            client
                .invoke(&addr, RemotingCommand::request(1), Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(5), client.close()).await?;
    let got = waiting.await?;
    assert!(
        matches!(got, Err(crate::Error::ConnectionClosed)),
        "{got:?}"
    );
    let got = client
        .invoke(&addr, RemotingCommand::request(1), Duration::from_secs(1))
        .await;
    assert!(
        matches!(got, Err(crate::Error::ConnectionClosed)),
        "{got:?}"
    );
    Ok(())
}

#[tokio::test]
async fn reconnects_on_next_use_after_the_server_closed() -> TestResult {
    let addr = serve(Behaviour::OneThenClose).await?;
    let client = client();
    for _ in 0..3 {
        client
            .invoke(&addr, RemotingCommand::request(7), Duration::from_secs(5))
            .await?;
        // Let the reader notice the close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn malformed_response_fails_the_request_and_drops_the_connection() -> TestResult {
    let addr = serve(Behaviour::Garbage).await?;
    let client = client();
    let got = client
        .invoke(&addr, RemotingCommand::request(7), Duration::from_secs(5))
        .await;
    assert!(
        matches!(got, Err(crate::Error::ConnectionClosed)),
        "{got:?}"
    );
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    drop(listener);
    let got = client()
        .invoke(&addr, RemotingCommand::request(7), Duration::from_secs(5))
        .await;
    assert!(matches!(got, Err(crate::Error::Connect { .. })), "{got:?}");
    Ok(())
}

/// A server that answers its oldest request every few milliseconds and records the most
/// requests it ever held unanswered.
async fn serve_slowly(most_unanswered: Arc<AtomicUsize>) -> Result<String, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let most = most_unanswered.clone();
            tokio::spawn(async move {
                let mut codec = RemotingCodec::default();
                let mut buf = BytesMut::new();
                let mut unanswered = std::collections::VecDeque::new();
                loop {
                    // Wait for a request, then give a client without a limit the time
                    // to send everything it has, and read that too.
                    if unanswered.is_empty()
                        && !read_requests(&mut socket, &mut buf, &mut unanswered, 5_000).await
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if !read_requests(&mut socket, &mut buf, &mut unanswered, 1).await {
                        return;
                    }
                    most.fetch_max(unanswered.len(), Ordering::SeqCst);
                    let Some(request) = unanswered.pop_front() else {
                        continue;
                    };
                    let mut response = RemotingCommand::request(request.code);
                    response.flag = FLAG_RESPONSE;
                    response.opaque = request.opaque;
                    if let Some(n) = request.ext("n") {
                        response = response.field("n", n.to_owned());
                    }
                    let mut out = BytesMut::new();
                    if codec.encode(&response, &mut out).is_err()
                        || socket.write_all(&out).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Reads what arrives within `wait_ms` and decodes every whole request in it; `false` once
/// the peer closed.
async fn read_requests(
    socket: &mut TcpStream,
    buf: &mut BytesMut,
    requests: &mut std::collections::VecDeque<RemotingCommand>,
    wait_ms: u64,
) -> bool {
    buf.reserve(64 * 1024);
    let read = tokio::time::timeout(Duration::from_millis(wait_ms), socket.read_buf(buf)).await;
    if matches!(read, Ok(Ok(0) | Err(_))) {
        return false;
    }
    while let Ok(Some(request)) = RemotingCodec::default().decode(buf) {
        requests.push_back(request);
    }
    true
}

#[tokio::test]
async fn in_flight_limit_queues_callers_without_failing_them() -> TestResult {
    let most_unanswered = Arc::new(AtomicUsize::new(0));
    let addr = serve_slowly(most_unanswered.clone()).await?;
    let client = Client::new(ClientConfig {
        max_in_flight: 2,
        ..ClientConfig::default()
    });
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let request = RemotingCommand::request(1).field("n", i.to_string());
            client.invoke(&addr, request, Duration::from_secs(10)).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await??.ext("n"), Some(i.to_string().as_str()));
    }
    // The server never held more than the limit unanswered, and did hold that many: the
    // limit is what kept the other callers queued (without it the server saw ~50).
    assert_eq!(most_unanswered.load(Ordering::SeqCst), 2);
    client.close().await;
    Ok(())
}
