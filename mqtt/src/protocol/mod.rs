//! The MQTT session core without I/O (issue #18; ntpd-rs's `ntp-proto` is the model).
//!
//! Synchronous state machines that take packets, completions and time and return what
//! to do; `crate::connection` is the async driver that owns the socket, the backend's
//! futures and the timers. Nothing here awaits, spawns, reads a clock or touches a
//! socket, so the protocol rules are tested as plain values.
//!
//! Modules:
//! - [`session`]: [`SessionCore`], one connection's protocol state, built of:
//! - [`outgoing`]: deliveries in flight to the client: packet ids, Receive Maximum;
//! - [`incoming`]: the client's QoS 1/2 publishes being stored and awaiting PUBREL;
//! - [`keepalive`]: the keepalive granted at CONNECT (Server Keep Alive) and the
//!   deadline of the client's silence;
//! - [`alias`]: topic aliases in both directions.
//!
//! Invariants, stated in full in each module:
//! - never more than the client's Receive Maximum unacknowledged QoS 1/2 deliveries
//!   (3.3.4-9); packet ids unique and non-zero among those in flight;
//! - a client's QoS 1/2 publish is acknowledged only once stored; a QoS 2 publish is
//!   stored once per packet id until PUBREL (4.3.3);
//! - inbound topic aliases within the advertised maximum (3.3.2-8/9), outbound ones
//!   within the client's (3.3.2-10);
//! - 1.5 × the granted keepalive of silence ends the connection (3.1.2-22).

pub mod alias;
pub mod incoming;
pub mod keepalive;
pub mod outgoing;
pub mod session;

pub use session::{Action, Delivering, Params, SessionCore, Ticket};
