//! The one error type of the cloud-bridge crate.

use std::io;

/// Everything that can go wrong inside cloud-bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket or file operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}
