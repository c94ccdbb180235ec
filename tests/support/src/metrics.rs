//! Scraping an OpenMetrics endpoint (`/metrics` of either server) into samples.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// `GET path` on the endpoint at `addr`: status and body (panics when it does not answer
/// within `wait`).
pub async fn get(addr: SocketAddr, path: &str, wait: Duration) -> (u16, String) {
    mqtt::metrics::fetch::get(addr, path, wait)
        .await
        .expect("endpoint answers")
}

/// Every sample of an OpenMetrics text: `name{labels}` -> value.
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_owned(), v.parse().expect("number"))
        })
        .collect()
}

/// The value of sample `key` (`name{labels}`); panics when it is not exported.
pub fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("{key} not exported"))
}
