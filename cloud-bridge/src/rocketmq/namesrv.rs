//! Requests to the name servers: topic routes, cluster info and kvconfig.
//!
//! Several name server addresses may be given (`NAMESRV_ADDR` style, `a:9876;b:9876`).
//! Name servers do not replicate to each other: each broker registers with all of them,
//! and kvconfig writes must go to all of them (as the Java admin tool does). So:
//! - route and cluster reads go to one server, the last one that answered, and move on to
//!   the next when a server cannot be reached, breaks the connection or times out;
//! - kvconfig writes and deletes go to every server. A server that cannot be reached is
//!   skipped (it is down: the write reaches it at the next read repair); a server that
//!   answers with an error fails the write, and so does reaching none. The result says
//!   whether every server took it ([`Written`]).
//! - kvconfig reads ask every server and merge what they hold ([`KvMerge`]): a server that
//!   was down during writes, or restarted with an old `kvConfig.json`, is behind, and
//!   reading only from it would lose wildcards or take live bridges for dead. After a
//!   merged read of comma lists, servers holding less are written the merged value (read
//!   repair), so they converge once they are back.

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

/// How kvconfig values read from several name servers are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvMerge {
    /// Comma lists: the union, in the order first seen (rocketmq-mqtt's `LMQ` namespace).
    Lists,
    /// Numbers (timestamps): the largest.
    Latest,
}

impl KvMerge {
    fn merge(self, a: &str, b: &str) -> String {
        match self {
            Self::Lists => {
                let mut out: Vec<&str> = a
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                for item in b.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !out.contains(&item) {
                        out.push(item);
                    }
                }
                out.join(",")
            }
            Self::Latest => {
                let n = |v: &str| v.trim().parse::<u64>().ok();
                match (n(a), n(b)) {
                    (Some(x), Some(y)) if y > x => b.to_owned(),
                    (None, Some(_)) => b.to_owned(),
                    _ => a.to_owned(),
                }
            }
        }
    }
}

/// Whether a kvconfig write reached every name server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Written {
    /// Every server took it.
    Everywhere,
    /// Some servers could not be reached (they are down); those that answered took it.
    Partly,
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

    /// Sends a write request to every server. Servers that cannot be reached are skipped
    /// (at least one must take it); an error answer fails the write, after all were tried.
    async fn invoke_all(&self, request: RemotingCommand) -> Result<Written, Error> {
        let mut first_error = None;
        let mut unreachable = None;
        let mut took = 0;
        for addr in &self.addrs {
            let result = self
                .client
                .invoke(addr, request.clone(), self.timeout)
                .await
                .and_then(RemotingCommand::into_success);
            match result {
                Ok(_) => took += 1,
                Err(e) if try_next(&e) => {
                    tracing::debug!(addr, error = %e, code = request.code, "name server down; write skipped");
                    unreachable.get_or_insert(e);
                }
                Err(e) => {
                    tracing::warn!(addr, error = %e, code = request.code, "name server write failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match (first_error, unreachable) {
            (Some(e), _) => Err(e),
            (None, Some(e)) if took == 0 => Err(e),
            (None, Some(_)) => Ok(Written::Partly),
            (None, None) => Ok(Written::Everywhere),
        }
    }

    /// Sends a read request to every server; the answers of those that could be reached,
    /// with their addresses (at least one, or the last transport error).
    async fn invoke_each(
        &self,
        request: RemotingCommand,
    ) -> Result<Vec<(&str, RemotingCommand)>, Error> {
        let mut answers = Vec::with_capacity(self.addrs.len());
        let mut last_error = None;
        for addr in &self.addrs {
            match self
                .client
                .invoke(addr, request.clone(), self.timeout)
                .await
            {
                Ok(response) => answers.push((addr.as_str(), response)),
                Err(e) if try_next(&e) => {
                    tracing::debug!(addr, error = %e, "name server down; read from the others");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if answers.is_empty() {
            return Err(last_error.unwrap_or(Error::ConnectionClosed));
        }
        Ok(answers)
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

    /// Stores `namespace`/`key` = `value` on every name server that can be reached
    /// (PUT_KV_CONFIG).
    pub async fn put_kv_config(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
    ) -> Result<Written, Error> {
        self.invoke_all(put_request(namespace, key, value)).await
    }

    /// The value of `namespace`/`key` merged over every name server that can be reached,
    /// `None` when none holds it (GET_KV_CONFIG). With [`KvMerge::Lists`], servers that
    /// hold less than the merged value are written it (read repair, best effort).
    pub async fn get_kv_config(
        &self,
        namespace: &str,
        key: &str,
        merge: KvMerge,
    ) -> Result<Option<String>, Error> {
        let request = RemotingCommand::request(request_code::GET_KV_CONFIG)
            .field("namespace", namespace.to_owned())
            .field("key", key.to_owned());
        let mut held: Vec<(&str, Option<String>)> = Vec::new();
        for (addr, response) in self.invoke_each(request).await? {
            let value = match response.code {
                response_code::SUCCESS => response.ext("value").map(str::to_owned),
                response_code::QUERY_NOT_FOUND => None,
                _ => return Err(response.into_error()),
            };
            held.push((addr, value));
        }
        let merged = held
            .iter()
            .filter_map(|(_, v)| v.as_deref())
            .fold(None::<String>, |acc, v| {
                Some(acc.map_or_else(|| v.to_owned(), |a| merge.merge(&a, v)))
            });
        if let (KvMerge::Lists, Some(merged)) = (merge, &merged) {
            for (addr, value) in &held {
                if value.as_deref() != Some(merged.as_str()) {
                    self.repair(addr, namespace, key, merged).await;
                }
            }
        }
        Ok(merged)
    }

    /// Writes the merged value to a server that held less (best effort).
    async fn repair(&self, addr: &str, namespace: &str, key: &str, value: &str) {
        let result = self
            .client
            .invoke(addr, put_request(namespace, key, value), self.timeout)
            .await
            .and_then(RemotingCommand::into_success);
        match result {
            Ok(_) => tracing::info!(
                addr,
                namespace,
                key,
                "name server was behind; kvconfig repaired"
            ),
            Err(e) => tracing::debug!(addr, namespace, key, error = %e, "kvconfig repair failed"),
        }
    }

    /// Deletes `namespace`/`key` from every name server that can be reached
    /// (DELETE_KV_CONFIG); deleting an absent key succeeds.
    pub async fn delete_kv_config(&self, namespace: &str, key: &str) -> Result<Written, Error> {
        let request = RemotingCommand::request(request_code::DELETE_KV_CONFIG)
            .field("namespace", namespace.to_owned())
            .field("key", key.to_owned());
        self.invoke_all(request).await
    }

    /// Every entry of `namespace` merged over every name server that can be reached, empty
    /// when there is none (GET_KVLIST_BY_NAMESPACE). With [`KvMerge::Lists`], servers that
    /// hold less are repaired as in [`NameServer::get_kv_config`].
    pub async fn kv_list(
        &self,
        namespace: &str,
        merge: KvMerge,
    ) -> Result<HashMap<String, String>, Error> {
        let request = RemotingCommand::request(request_code::GET_KVLIST_BY_NAMESPACE)
            .field("namespace", namespace.to_owned());
        let mut tables: Vec<(&str, HashMap<String, String>)> = Vec::new();
        for (addr, response) in self.invoke_each(request).await? {
            let table = match response.code {
                response_code::SUCCESS => parse_json::<KvTable>(&response.body, "kv list")?.table,
                response_code::QUERY_NOT_FOUND => HashMap::new(),
                _ => return Err(response.into_error()),
            };
            tables.push((addr, table));
        }
        let mut merged: HashMap<String, String> = HashMap::new();
        for (_, table) in &tables {
            for (k, v) in table {
                let m = match merged.get(k) {
                    Some(held) => merge.merge(held, v),
                    None => v.clone(),
                };
                merged.insert(k.clone(), m);
            }
        }
        if merge == KvMerge::Lists && tables.len() > 1 {
            for (addr, table) in &tables {
                for (k, v) in &merged {
                    if table.get(k) != Some(v) {
                        self.repair(addr, namespace, k, v).await;
                    }
                }
            }
        }
        Ok(merged)
    }
}

fn put_request(namespace: &str, key: &str, value: &str) -> RemotingCommand {
    RemotingCommand::request(request_code::PUT_KV_CONFIG)
        .field("namespace", namespace.to_owned())
        .field("key", key.to_owned())
        .field("value", value.to_owned())
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

    #[test]
    fn merges_lists_by_union_and_numbers_by_the_largest() {
        assert_eq!(
            KvMerge::Lists.merge("t/+,t/a/#", "t/a/#,t/b/+"),
            "t/+,t/a/#,t/b/+"
        );
        assert_eq!(KvMerge::Lists.merge("", "a"), "a");
        assert_eq!(KvMerge::Latest.merge("100", "250"), "250");
        assert_eq!(KvMerge::Latest.merge("300", "250"), "300");
        assert_eq!(KvMerge::Latest.merge("x", "7"), "7");
    }
}
