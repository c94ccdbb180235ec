//! The MQTT session core without I/O (issue #18; ntpd-rs's `ntp-proto` is the model).
//!
//! Synchronous state machines that take packets, completions and time and return what
//! to do. Server side: `crate::connection` is the async driver that owns the socket, the
//! backend's futures and the timers. Client side: the edge-agent's uplink
//! (`agent/src/uplink/link.rs`) drives [`ClientCore`]. Nothing here awaits, spawns,
//! reads a clock or touches a socket, so the protocol rules are tested as plain values.
//!
//! Modules:
//! - [`session`]: [`SessionCore`], one server connection's protocol state, built of:
//! - [`outgoing`]: publishes in flight to the peer: packet ids (the one allocator),
//!   Receive Maximum;
//! - [`incoming`]: the client's QoS 1/2 publishes being stored and awaiting PUBREL;
//! - [`keepalive`]: the keepalive granted at CONNECT (Server Keep Alive) and the
//!   deadline of the client's silence;
//! - [`alias`]: topic aliases in both directions;
//! - [`client`]: [`ClientCore`], one client connection's protocol state (the uplink):
//!   `outgoing`, the client's keepalive ([`keepalive::Pinger`]), outbound aliases and
//!   the downlink's acknowledgements.
//!
//! Invariants, stated in full in each module:
//! - never more than the client's Receive Maximum unacknowledged QoS 1/2 deliveries
//!   (3.3.4-9); packet ids unique and non-zero among those in flight;
//! - a client's QoS 1/2 publish is acknowledged only once stored; a QoS 2 publish is
//!   stored once per packet id until PUBREL (4.3.3);
//! - inbound topic aliases within the advertised maximum (3.3.2-8/9), outbound ones
//!   within the client's (3.3.2-10);
//! - 1.5 × the granted keepalive of silence ends the connection (3.1.2-22);
//! - client side: at most min(window, the server's Receive Maximum) publishes in flight
//!   (3.3.4-7); a PUBACK settles the publish of its packet id once, an unknown one ends
//!   the connection; a downlink QoS 1 message is acknowledged only once the local broker
//!   took it; a PINGRESP missing for a keepalive ends the connection.

pub mod alias;
pub mod client;
pub mod incoming;
pub mod keepalive;
pub mod outgoing;
pub mod session;

pub use client::{ClientCore, ClientParams, Event, FromServer, Lost, Publishing};
pub use session::{Action, Delivering, Params, SessionCore, Ticket};
