//! The read path: a client's session, the readers that pull its LMQs, what it may
//! commit, and its retry queue.
//!
//! - [`session`]: one client's session: subscriptions, readers per LMQ and broker, the
//!   implicit p2p and retry queues, the stored session record;
//! - [`reader`]: one LMQ on one broker, long-polled into the session's delivery channel;
//! - [`offsets`]: what was handed to the client and what may be committed, per queue;
//! - [`retry`]: a message left unacknowledged too often moves to the retry queue.

pub mod offsets;
pub mod reader;
pub mod retry;
pub mod session;
