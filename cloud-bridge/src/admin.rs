//! Administration that replaces rocketmq-mqtt's manual `mqadmin` steps: creating topics and
//! writing the kvconfig meta (`cloud-bridge init`), and managing wildcard filters
//! (`cloud-bridge wildcard add|remove|list`).

use crate::config::Config;
use crate::error::Error;
use crate::lmq;
use crate::meta::kvconfig::{self, ALL_FIRST_TOPICS, LMQ_CONNECT_NODES, NAMESPACE};
use crate::meta::table::{Table, TableLimits};
use crate::meta::wildcards;
use crate::rocketmq::{
    Client, ClientConfig, KvMerge, NameServer, Producer, ProducerConfig, TopicConfig,
};
use std::sync::Arc;

/// What `init` did, for the operator.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Topics created or updated, with the brokers they were created on.
    pub topics: Vec<(String, Vec<String>)>,
    /// kvconfig entries written.
    pub kv: Vec<(String, String)>,
}

/// Attributes of the state topics: a log that keeps the latest record per key.
pub const STATE_TOPIC_ATTRIBUTES: &str = "+cleanup.policy=COMPACTION";

fn namesrv(config: &Config) -> Result<NameServer, Error> {
    NameServer::new(
        Client::new(ClientConfig::default()),
        config.rocketmq.namesrv.clone(),
    )
}

/// Creates (or updates) a topic on every master broker of `cluster`; returns their addresses.
async fn create_topic(
    ns: &NameServer,
    cluster: &str,
    topic: &str,
    queues: u32,
    attributes: Option<&str>,
) -> Result<Vec<String>, Error> {
    let info = ns.cluster_info().await?;
    let addrs: Vec<String> = info
        .master_addrs(cluster)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if addrs.is_empty() {
        return Err(Error::Invalid(format!(
            "cluster {cluster:?} has no master broker registered in the name server"
        )));
    }
    let mut topic_config = TopicConfig::new(topic);
    topic_config.read_queue_nums = queues;
    topic_config.write_queue_nums = queues;
    topic_config.attributes = attributes.map(str::to_owned);
    for addr in &addrs {
        match ns.client().broker(addr).create_topic(&topic_config).await {
            // The topic exists already, and its cleanup policy cannot change (RocketMQ
            // refuses to update it even to the same value): keep it as it is.
            Err(Error::Remoting { remark, .. })
                if attributes.is_some() && remark.contains("unchangeable attribute") => {}
            other => other?,
        }
    }
    Ok(addrs)
}

/// Creates every first-level topic, the retry/p2p topics and the state topics (compaction
/// topics of retained messages, sessions and wills) on the cluster, and writes
/// `ALL_FIRST_TOPICS`, `LMQ_CONNECT_NODES` and the wildcard lists to kvconfig. Existing
/// wildcard lists are merged, never shrunk. Idempotent.
pub async fn init(config: &Config) -> Result<InitReport, Error> {
    let ns = namesrv(config)?;
    let mut report = InitReport::default();
    let t = &config.topics;
    let mut topics = t.first_level.clone();
    topics.extend([
        t.event_notify_retry_topic.clone(),
        t.client_retry_topic.clone(),
        t.client_p2p_topic.clone(),
    ]);
    for topic in topics {
        let brokers = create_topic(&ns, &config.rocketmq.cluster, &topic, t.queues, None).await?;
        report.topics.push((topic, brokers));
    }
    // The state tables (`meta/table.rs`): compaction topics, one queue per broker. The
    // cleanup policy can only be set when a topic is created.
    for topic in [
        &t.retained_topic,
        &t.session_topic,
        &t.will_topic,
        &t.wildcard_topic,
    ] {
        let brokers = create_topic(
            &ns,
            &config.rocketmq.cluster,
            topic,
            1,
            Some(STATE_TOPIC_ATTRIBUTES),
        )
        .await?;
        report.topics.push((topic.clone(), brokers));
    }

    let mut all = match ns
        .get_kv_config(NAMESPACE, ALL_FIRST_TOPICS, KvMerge::Lists)
        .await?
    {
        Some(v) => kvconfig::split_list(&v),
        None => Vec::new(),
    };
    merge(&mut all, &t.first_level);
    let all = all.join(",");
    let _ = ns.put_kv_config(NAMESPACE, ALL_FIRST_TOPICS, &all).await?;
    report.kv.push((ALL_FIRST_TOPICS.into(), all));

    let nodes = if t.connect_nodes.is_empty() {
        config
            .listeners
            .iter()
            .map(|l| l.bind.ip().to_string())
            .collect::<Vec<_>>()
    } else {
        t.connect_nodes.clone()
    };
    let mut nodes_merged = match ns
        .get_kv_config(NAMESPACE, LMQ_CONNECT_NODES, KvMerge::Lists)
        .await?
    {
        Some(v) => kvconfig::split_list(&v),
        None => Vec::new(),
    };
    merge(&mut nodes_merged, &nodes);
    let nodes = nodes_merged.join(",");
    let _ = ns
        .put_kv_config(NAMESPACE, LMQ_CONNECT_NODES, &nodes)
        .await?;
    report.kv.push((LMQ_CONNECT_NODES.into(), nodes));

    for first in &t.first_level {
        let wanted: Vec<String> = t
            .wildcards
            .iter()
            .filter(|w| lmq::first_topic(w) == first)
            .cloned()
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let list = add_wildcards(&ns, first, &wanted).await?;
        report.kv.push((first.clone(), list.join(",")));
    }
    Ok(report)
}

fn merge(list: &mut Vec<String>, more: &[String]) {
    for m in more {
        if !list.contains(m) {
            list.push(m.clone());
        }
    }
}

async fn add_wildcards(
    ns: &NameServer,
    first: &str,
    filters: &[String],
) -> Result<Vec<String>, Error> {
    let mut list = match ns.get_kv_config(NAMESPACE, first, KvMerge::Lists).await? {
        Some(v) => kvconfig::split_list(&v),
        None => Vec::new(),
    };
    merge(&mut list, filters);
    let _ = ns.put_kv_config(NAMESPACE, first, &list.join(",")).await?;
    Ok(list)
}

/// The wildcard lease table (`meta/wildcards.rs`), for writing only.
fn lease_table(config: &Config) -> Result<Table, Error> {
    let ns = Arc::new(namesrv(config)?);
    let producer = Arc::new(Producer::new(
        ns.clone(),
        ProducerConfig {
            group: "cloud-bridge-admin".to_owned(),
            send_timeout: config.send_timeout(),
            ..ProducerConfig::default()
        },
    ));
    Ok(Table::new(
        "wildcards",
        &config.topics.wildcard_topic,
        ns,
        producer,
        TableLimits::default(),
    ))
}

/// Registers a wildcard filter, pinned: a lease a bridge held on it is deleted, so that it
/// is never pruned. Returns the first-level topic's list after the change.
pub async fn wildcard_add(config: &Config, filter: &str) -> Result<Vec<String>, Error> {
    let ns = namesrv(config)?;
    let first_levels = first_levels(&ns, config).await?;
    lmq::check_wildcard(filter, &first_levels).map_err(Error::Invalid)?;
    wildcards::pin(&lease_table(config)?, filter).await?;
    add_wildcards(&ns, lmq::first_topic(filter), &[filter.to_owned()]).await
}

/// Removes a wildcard filter; returns the list after the change.
pub async fn wildcard_remove(config: &Config, filter: &str) -> Result<Vec<String>, Error> {
    let ns = namesrv(config)?;
    let first = lmq::first_topic(filter);
    let mut list = match ns.get_kv_config(NAMESPACE, first, KvMerge::Lists).await? {
        Some(v) => kvconfig::split_list(&v),
        None => Vec::new(),
    };
    let before = list.len();
    list.retain(|f| f != filter);
    if list.len() == before {
        return Err(Error::Invalid(format!("{filter:?} is not registered")));
    }
    let _ = ns.put_kv_config(NAMESPACE, first, &list.join(",")).await?;
    // Its lease, if a bridge registered it, goes too.
    wildcards::pin(&lease_table(config)?, filter).await?;
    Ok(list)
}

/// Lists the wildcard filters of every first-level topic.
pub async fn wildcard_list(config: &Config) -> Result<Vec<(String, Vec<String>)>, Error> {
    let ns = namesrv(config)?;
    let mut out = Vec::new();
    for first in first_levels(&ns, config).await? {
        let list = match ns.get_kv_config(NAMESPACE, &first, KvMerge::Lists).await? {
            Some(v) => kvconfig::split_list(&v),
            None => Vec::new(),
        };
        out.push((first, list));
    }
    Ok(out)
}

async fn first_levels(ns: &NameServer, config: &Config) -> Result<Vec<String>, Error> {
    let mut all = config.topics.first_level.clone();
    if let Some(v) = ns
        .get_kv_config(NAMESPACE, ALL_FIRST_TOPICS, KvMerge::Lists)
        .await?
    {
        merge(&mut all, &kvconfig::split_list(&v));
    }
    Ok(all)
}
