//! Waiting for the signals that stop a server: SIGTERM (systemd) or SIGINT (Ctrl-C).

/// Returns when SIGTERM or SIGINT arrives (only SIGINT where SIGTERM cannot be watched).
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
