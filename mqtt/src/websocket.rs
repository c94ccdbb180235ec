//! MQTT over WebSocket: the HTTP upgrade (any path; the `mqtt` subprotocol is echoed when
//! the client offers it, as MQTT 5 §6 asks), then MQTT packets in binary frames, exposed as
//! a byte stream so the same connection state machine serves it. Frames and messages are
//! limited to the maximum packet size (plus framing slack).

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use ws_stream_tungstenite::WsStream;

use crate::error::Error;

const SUBPROTOCOL_HEADER: &str = "Sec-WebSocket-Protocol";

/// Performs the server side of the WebSocket handshake on `stream`.
pub async fn accept<S>(
    stream: S,
    max_packet_size: usize,
) -> Result<impl AsyncRead + AsyncWrite + Unpin + Send, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The error type is tungstenite's Callback signature, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        let offers_mqtt = request
            .headers()
            .get_all(SUBPROTOCOL_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
        if offers_mqtt {
            response
                .headers_mut()
                .insert(SUBPROTOCOL_HEADER, HeaderValue::from_static("mqtt"));
        }
        Ok(response)
    };
    let limit = max_packet_size.saturating_add(16);
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let ws = async_tungstenite::tokio::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .map_err(|e| Error::WebSocket(e.to_string()))?;
    Ok(WsStream::new(ws))
}
