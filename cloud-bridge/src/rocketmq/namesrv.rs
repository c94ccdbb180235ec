//! Requests to the name servers: topic routes, cluster info and kvconfig.
//!
//! Several name server addresses may be given (`NAMESRV_ADDR` style, `a:9876;b:9876`).
//! Name servers do not replicate to each other: each broker registers with all of them,
//! and kvconfig writes must go to all of them (as the Java admin tool does). So:
//! - reads go to one server, the last one that answered, and move on to the next when a
//!   server cannot be reached, breaks the connection or times out;
//! - kvconfig writes and deletes go to every server, and fail if any of them failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;

use super::client::Client;
use super::command::{RemotingCommand, request_code, response_code};
use super::route::{ClusterInfo, TopicRoute, parse_json};
use crate::Error;

/// Splits a `NAMESRV_ADDR`-style list (`;` or `,` separated) into addresses.
pub fn parse_addrs(list: &str) -> Vec<String> {
    list.split([';', ','])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The name servers of one RocketMQ deployment.
#[derive(Debug)]
pub struct NameServer {
    client: Client,
    addrs: Vec<String>,
    preferred: AtomicUsize,
    timeout: Duration,
}

#[derive(Deserialize)]
struct KvTable {
    #[serde(default)]
    table: HashMap<String, String>,
}

/// Whether an error leaves the request worth trying on another name server.
fn try_next(error: &Error) -> bool {
    matches!(
        error,
        Error::Connect { .. } | Error::ConnectionClosed | Error::Timeout | Error::Frame(_)
    )
}

impl NameServer {
    /// Name servers at `addrs`, reached through `client`, with the client's request timeout.
    /// An empty list is an error.
    pub fn new(client: Client, addrs: Vec<String>) -> Result<Self, Error> {
        if addrs.is_empty() {
            return Err(Error::Connect {
                addr: String::new(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "no name server address",
                ),
            });
        }
        let timeout = client.config().request_timeout;
        Ok(Self {
            client,
            addrs,
            preferred: AtomicUsize::new(0),
            timeout,
        })
    }

    /// The name server addresses.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The client used to reach them.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends a read request to one server, moving on to the next on transport failures.
    async fn invoke_any(&self, request: RemotingCommand) -> Result<RemotingCommand, Error> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = None;
        for i in 0..self.addrs.len() {
            let index = (first + i) % self.addrs.len();
            let addr = &self.addrs[index];
            match self
                .client
                .invoke(addr, request.clone(), self.timeout)
                .await
            {
                Ok(response) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(e) if try_next(&e) => {
                    tracing::debug!(addr, error = %e, "name server failed, trying the next");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(Error::ConnectionClosed))
    }

    /// Sends a write request to every server; the first failure is returned, after all
    /// were tried.
    async fn invoke_all(&self, request: RemotingCommand) -> Result<(), Error> {
        let mut first_error = None;
        for addr in &self.addrs {
            let result = self
                .client
                .invoke(addr, request.clone(), self.timeout)
                .await
                .and_then(RemotingCommand::into_success);
            if let Err(e) = result {
                tracing::warn!(addr, error = %e, code = request.code, "name server write failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The route of `topic` (GET_ROUTEINFO_BY_TOPIC). A topic the name servers do not know
    /// is [`Error::RouteNotFound`].
    pub async fn topic_route(&self, topic: &str) -> Result<TopicRoute, Error> {
        let request = RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC)
            .field("topic", topic.to_owned())
            .field("acceptStandardJsonOnly", "true");
        let response = self.invoke_any(request).await?;
        match response.code {
            response_code::SUCCESS => parse_json(&response.body, "topic route"),
            response_code::TOPIC_NOT_EXIST => Err(Error::RouteNotFound(topic.to_owned())),
            _ => Err(response.into_error()),
        }
    }

    /// Every cluster and broker known (GET_BROKER_CLUSTER_INFO).
    pub async fn cluster_info(&self) -> Result<ClusterInfo, Error> {
        let request = RemotingCommand::request(request_code::GET_BROKER_CLUSTER_INFO);
        let response = self.invoke_any(request).await?.into_success()?;
        parse_json(&response.body, "cluster info")
    }

    /// Stores `namespace`/`key` = `value` on every name server (PUT_KV_CONFIG).
    pub async fn put_kv_config(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
    ) -> Result<(), Error> {
        let request = RemotingCommand::request(request_code::PUT_KV_CONFIG)
            .field("namespace", namespace.to_owned())
            .field("key", key.to_owned())
            .field("value", value.to_owned());
        self.invoke_all(request).await
    }

    /// The value of `namespace`/`key`, `None` when absent (GET_KV_CONFIG).
    pub async fn get_kv_config(&self, namespace: &str, key: &str) -> Result<Option<String>, Error> {
        let request = RemotingCommand::request(request_code::GET_KV_CONFIG)
            .field("namespace", namespace.to_owned())
            .field("key", key.to_owned());
        let response = self.invoke_any(request).await?;
        match response.code {
            response_code::SUCCESS => Ok(response.ext("value").map(str::to_owned)),
            response_code::QUERY_NOT_FOUND => Ok(None),
            _ => Err(response.into_error()),
        }
    }

    /// Deletes `namespace`/`key` from every name server (DELETE_KV_CONFIG); deleting an
    /// absent key succeeds.
    pub async fn delete_kv_config(&self, namespace: &str, key: &str) -> Result<(), Error> {
        let request = RemotingCommand::request(request_code::DELETE_KV_CONFIG)
            .field("namespace", namespace.to_owned())
            .field("key", key.to_owned());
        self.invoke_all(request).await
    }

    /// Every entry of `namespace`, empty when there is none (GET_KVLIST_BY_NAMESPACE).
    pub async fn kv_list(&self, namespace: &str) -> Result<HashMap<String, String>, Error> {
        let request = RemotingCommand::request(request_code::GET_KVLIST_BY_NAMESPACE)
            .field("namespace", namespace.to_owned());
        let response = self.invoke_any(request).await?;
        match response.code {
            response_code::SUCCESS => Ok(parse_json::<KvTable>(&response.body, "kv list")?.table),
            response_code::QUERY_NOT_FOUND => Ok(HashMap::new()),
            _ => Err(response.into_error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namesrv_addr_lists() {
        assert_eq!(
            parse_addrs(" a:9876; b:9876,,c:1 "),
            vec!["a:9876", "b:9876", "c:1"]
        );
        assert!(parse_addrs(" ; ").is_empty());
    }
}
