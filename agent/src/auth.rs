//! Who may connect to the local broker.
//!
//! In this order:
//! 1. a client certificate verified by a mutual-TLS listener authenticates the client
//!    (its identity is the certificate's);
//! 2. a user name from `[[auth.users]]` with the password matching its Argon2 PHC hash
//!    (verified on the blocking pool: a hash costs milliseconds of CPU and ~19 MiB of
//!    memory by design);
//! 3. no user name at all, if anonymous access is allowed
//!    ([`AuthConfig::anonymous_allowed`]).
//!
//! Anything else is refused with "bad user name or password" (MQTT 5 0x86, 3.1.1 code 4)
//! and the same text whether the user exists or not; an unknown user's password is
//! checked against a fixed dummy hash, so the answer takes as long as for a known one.
//!
//! At most `auth.max_concurrent_checks` checks run at once (a semaphore): a CONNECT
//! waits up to `auth.check_wait_ms` for one, then is refused as "server busy" (MQTT 5
//! 0x89, 3.1.1 code 3) and counted. The waiting CONNECTs are bounded by
//! `limits.max_connections`: nothing queues without bound. The checks run on that many
//! dedicated threads, not on the blocking pool: each thread's allocator arena keeps the
//! ~19 MiB an Argon2 check took, so a pool of hundreds of threads would keep hundreds of
//! them (measured: 316 MiB peak after 300 checks, two at a time, on the blocking pool).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use mqtt::broker::{Peer, Refusal};
use mqtt::packet::{Connect, Reason};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Authentication: a verified client certificate, a user with a password, or anonymous.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept clients that send no user name (and no certificate). Unset: yes without
    /// `users`, no with them (see [`AuthConfig::anonymous_allowed`]).
    pub allow_anonymous: Option<bool>,
    /// Users and their password hashes (PHC strings, `edge-agent passwd` makes one).
    pub users: Vec<UserConfig>,
    /// Password checks (Argon2, ~19 MiB and tens of ms each) running at once.
    pub max_concurrent_checks: usize,
    /// How long a CONNECT waits for a free check before it is refused as "server busy"
    /// (MQTT 5 0x89, 3.1.1 code 3), milliseconds.
    pub check_wait_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: None,
            users: Vec::new(),
            max_concurrent_checks: 2,
            check_wait_ms: 2000,
        }
    }
}

impl AuthConfig {
    /// Whether clients without a user name (and without a certificate) are accepted:
    /// `allow_anonymous` when set, else only when no `[[auth.users]]` are configured.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.users.is_empty())
    }
}

/// One user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The MQTT user name.
    pub name: String,
    /// Argon2 PHC string, for example `$argon2id$v=19$m=19456,t=2,p=1$...`.
    pub password_hash: String,
}

/// Checks that `hash` is a PHC string Argon2 can verify against.
pub fn parse_hash(hash: &str) -> std::result::Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC string: {e}"))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "algorithm {} is not argon2",
            parsed.algorithm.as_str()
        ));
    }
    Ok(())
}

/// Hashes a password with Argon2id and a random salt (for `edge-agent passwd`).
pub fn hash_password(password: &str) -> Result<String> {
    let bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&bytes).map_err(|e| Error::Internal(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

/// Whether `password` matches the PHC `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The hash unknown users' passwords are checked against: Argon2id with the default
/// parameters (those of `edge-agent passwd`), of a password nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZHVtbXlzYWx0ZHVtbXlzYWx0$Zb1ZxOUbi0Ae4BsQxc1dnmgu+eo3BQAaUuoe1G0YzvI";

/// The compiled authentication rules.
#[derive(Debug, Clone)]
pub struct Authenticator {
    allow_anonymous: bool,
    users: Arc<HashMap<String, String>>,
    checks: Arc<Semaphore>,
    workers: std::sync::mpsc::SyncSender<Check>,
    wait: Duration,
    busy: Arc<AtomicU64>,
}

/// A password check for a worker thread: password, hash, where the answer goes.
type Check = (String, String, tokio::sync::oneshot::Sender<bool>);

/// Starts `n` threads that verify passwords; they end when the sender is dropped.
fn start_workers(n: usize) -> std::sync::mpsc::SyncSender<Check> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Check>(n);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("password-check-{i}"))
            .spawn(move || {
                loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((password, hash, reply)) = job else {
                        return;
                    };
                    let _ = reply.send(verify_password(&password, &hash));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a password check thread");
        }
    }
    tx
}

impl Authenticator {
    /// From the `[auth]` table (hashes are checked by `Config::check`).
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            allow_anonymous: config.anonymous_allowed(),
            users: Arc::new(
                config
                    .users
                    .iter()
                    .map(|u| (u.name.clone(), u.password_hash.clone()))
                    .collect(),
            ),
            checks: Arc::new(Semaphore::new(config.max_concurrent_checks.max(1))),
            workers: start_workers(config.max_concurrent_checks.max(1)),
            wait: Duration::from_millis(config.check_wait_ms),
            busy: Arc::default(),
        }
    }

    /// CONNECTs refused because every password check slot stayed busy.
    pub fn busy_refusals(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Authenticates a CONNECT; returns the client's identity.
    pub async fn authenticate(&self, connect: &Connect, peer: &Peer) -> Result<String, Refusal> {
        if let Some(identity) = &peer.tls_identity {
            return Ok(identity.clone());
        }
        let refused = || Refusal::new(Reason::BadUserNameOrPassword, "bad user name or password");
        let Some(user) = &connect.username else {
            if self.allow_anonymous && connect.password.is_none() {
                return Ok(connect.client_id.clone());
            }
            return Err(Refusal::new(
                Reason::NotAuthorized,
                "anonymous clients are not allowed",
            ));
        };
        let Some(password) = connect.password.clone() else {
            return Err(refused());
        };
        // An unknown user costs the same check as a known one (no timing oracle).
        let (known, hash) = match self.users.get(user) {
            Some(h) => (true, h.clone()),
            None => (false, DUMMY_HASH.to_owned()),
        };
        let slot = tokio::time::timeout(self.wait, self.checks.clone().acquire_owned()).await;
        let Ok(Ok(slot)) = slot else {
            self.busy.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::new(
                Reason::ServerBusy,
                "too many password checks at once; try again",
            ));
        };
        // A permit is held, so the channel (as deep as there are permits) has room.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let ok = match self.workers.try_send((password, hash, reply)) {
            Ok(()) => answer.await.unwrap_or(false),
            Err(_) => false,
        };
        drop(slot);
        if ok && known {
            Ok(user.clone())
        } else {
            Err(refused())
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn hash_roundtrip() {
        let h = hash_password("s3cret").expect("hash");
        assert!(parse_hash(&h).is_ok());
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("S3cret", &h));
        assert!(parse_hash("plain").is_err());
        assert!(!verify_password("x", "plain"));
        assert!(parse_hash(DUMMY_HASH).is_ok());
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
