//! The one trait every sensor driver implements for the sensor task, and how one is opened.

use std::sync::Arc;

use super::reading::Value;
use crate::error::Result;

/// Opens (and initialises) a sensor; the sensor task calls it on the blocking pool at
/// start and again after each fault. [`super::linux::opener`] makes the real ones.
pub type Opener = Arc<dyn Fn() -> Result<Box<dyn Sampler>> + Send + Sync>;

/// An opened sensor that takes samples.
pub trait Sampler: Send + 'static {
    /// Takes one sample: zero or more values (a digital input returns a value only
    /// when its debounced level changed). May block on the bus; the task runs it on
    /// the blocking pool unless [`Sampler::is_quick`].
    fn sample(&mut self) -> Result<Vec<Value>>;

    /// `true` if `sample` never blocks (generated values, one GPIO ioctl): the task
    /// calls it directly instead of on the blocking pool.
    fn is_quick(&self) -> bool {
        false
    }
}
