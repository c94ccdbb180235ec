//! The docs are a map that stays true:
//! - every key the configuration code accepts has exactly one row in its reference table
//!   (`docs/configure-bridge.md`, `docs/configure-agent.md`, "Every key"), and every row
//!   is a key the code accepts: adding a key means adding one row
//!   `| \`section.key\` | default | meaning |`;
//! - every metric the Grafana dashboards (`conf/grafana/*.json`) query is in the real
//!   `/metrics` output of a running edge-agent and cloud-bridge;
//! - the relative links of README.md and docs/*.md point at files that exist;
//! - docs/architecture.svg is what graphviz makes of docs/architecture.dot (checked only
//!   when `dot` is installed, and with the graphviz version that made the SVG).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use e2e::Process;
use test_support::{free_port, repo_root, rocketmq, unique};

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The keys of a reference table: the first cell of every row that starts with a
/// backquoted dotted name, with how often each appears.
fn documented_keys(text: &str) -> BTreeMap<String, usize> {
    let mut keys = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((key, _)) = rest.split_once("` |") else {
            continue;
        };
        if key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        {
            *keys.entry(key.to_owned()).or_insert(0) += 1;
        }
    }
    keys
}

/// The "## Every key" section of a guide.
fn every_key_section(text: &str) -> &str {
    let start = text
        .find("\n## Every key\n")
        .expect("a \"## Every key\" section");
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    &rest[..end]
}

fn check_reference(doc: &str, code: BTreeSet<String>) {
    let documented = documented_keys(every_key_section(&read(doc)));
    let missing: Vec<&String> = code
        .iter()
        .filter(|k| !documented.contains_key(*k))
        .collect();
    let unknown: Vec<&String> = documented.keys().filter(|k| !code.contains(*k)).collect();
    let twice: Vec<&String> = documented
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty() && twice.is_empty(),
        "{doc}, table \"Every key\": add a row `| \\`key\\` | default | meaning |` for each \
         key the code accepts and the table lacks: {missing:?}; remove the rows of keys the \
         code does not accept: {unknown:?}; keep one row per key: {twice:?}"
    );
    // Only there: the README and the other guides mention keys, they do not define them.
    for other in ["README.md", "docs/operating.md", "docs/journal.md"] {
        let rows = documented_keys(&read(other));
        let stray: Vec<&String> = rows.keys().filter(|k| code.contains(*k)).collect();
        assert!(
            stray.is_empty(),
            "{other} has key rows that belong in {doc}: {stray:?}"
        );
    }
}

#[test]
fn every_bridge_key_is_documented_once() {
    let keys = mqtt::config_file::keys::<cloud_bridge::config::Config>().unwrap();
    assert!(keys.contains("limits.max_packet_size") && keys.contains("listener.tls.cert"));
    check_reference("docs/configure-bridge.md", keys);
}

#[test]
fn every_agent_key_is_documented_once() {
    let keys = mqtt::config_file::keys::<edge_agent::config::Config>().unwrap();
    assert!(keys.contains("journal.rules.filter") && keys.contains("sensor.type"));
    check_reference("docs/configure-agent.md", keys);
}

#[test]
fn a_key_missing_from_the_docs_is_caught() {
    let doc = read("docs/configure-bridge.md");
    let without = doc.replace("| `limits.max_inflight` |", "| limits.max_inflight |");
    assert_ne!(doc, without);
    let code = mqtt::config_file::keys::<cloud_bridge::config::Config>().unwrap();
    let documented = documented_keys(every_key_section(&without));
    assert!(code.iter().any(|k| !documented.contains_key(k)));
}

/// Every metric name a dashboard's queries use (`edge_agent_...`, `cloud_bridge_...`).
fn dashboard_metrics(path: &str, prefix: &str) -> BTreeSet<String> {
    let json: serde_json::Value = serde_json::from_str(&read(path)).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for panel in json["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    for var in json["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = var["definition"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    let names: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with(prefix))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(names.len() >= 10, "{path}: {names:?}");
    names
}

/// The names a query may use for an OpenMetrics text: every sample's name, and for each
/// family its typed names (a counter `x` is `x_total`; a histogram `x_bucket`, `x_sum`,
/// `x_count`), so a labelled family without samples yet still counts.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 200 "),
        "{text}"
    );
    text
}

fn check_dashboard(path: &str, prefix: &str, metrics: &str) {
    let queried = dashboard_metrics(path, prefix);
    let exported = exported(metrics);
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "{path} queries metrics that /metrics does not have: {missing:?}\n{metrics}"
    );
}

#[test]
fn every_metric_the_agent_dashboard_queries_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nname = \"tcp\"\nbind = \"127.0.0.1:{port}\"\n\n[metrics]\nbind = \
             \"127.0.0.1:{metrics_port}\"\n\n[[sensor]]\nid = \"sim-1\"\ntype = \"simulated\"\n\
             topic = \"sensors/sim-1\"\ninterval_ms = 100\n"
        ),
    )
    .unwrap();
    let arg = |p: &Path| p.display().to_string();
    let mut agent = Process::spawn(
        "edge-agent",
        vec![
            "run".into(),
            "--config".into(),
            arg(&config),
            "--state-dir".into(),
            arg(&dir.path().join("state")),
        ],
        dir.path().join("agent.log"),
    );
    agent.wait_port(metrics_port);
    check_dashboard(
        "conf/grafana/edge-agent.json",
        "edge_agent_",
        &scrape(metrics_port),
    );
    agent.stop();
}

#[test]
fn every_metric_the_bridge_dashboard_queries_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[rocketmq]\nnamesrv = [\"{ns}\"]\n\n[topics]\nfirst_level = [\"{first}\"]\n\n\
             [auth]\nusername = \"demo\"\nsecret_key = \"s\"\n\n[metrics]\nbind = \
             \"127.0.0.1:{metrics_port}\"\n\n[[listener]]\nname = \"mqtt\"\nbind = \
             \"127.0.0.1:{port}\"\n",
            ns = rocketmq::env("ROCKETMQ_NAMESRV"),
            first = unique("docs"),
        ),
    )
    .unwrap();
    let mut bridge = Process::spawn(
        "cloud-bridge",
        vec![
            "run".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        dir.path().join("bridge.log"),
    );
    bridge.wait_port(metrics_port);
    check_dashboard(
        "conf/grafana/cloud-bridge.json",
        "cloud_bridge_",
        &scrape(metrics_port),
    );
    bridge.stop();
}

#[test]
fn readme_and_guides_link_to_files_that_exist() {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    assert!(files.len() >= 7, "{files:?}");
    let readme = read("README.md");
    for guide in [
        "configure-bridge.md",
        "configure-agent.md",
        "flashing-a-gateway.md",
        "operating.md",
        "rocketmq-mqtt-compatibility.md",
        "journal.md",
    ] {
        assert!(
            readme.contains(&format!("(docs/{guide})")),
            "README lacks docs/{guide}"
        );
    }
    assert!(readme.contains("(docs/architecture.svg)"));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (_, rest) in text.match_indices("](").map(|(i, _)| ((), &text[i + 2..])) {
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.starts_with("http") || target.starts_with('#') || target.contains(' ') {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            let resolved = file.parent().unwrap().join(path);
            assert!(
                resolved.exists(),
                "{}: link to {target} ({}) is broken",
                file.display(),
                resolved.display()
            );
        }
    }
}

#[test]
fn the_architecture_svg_is_made_from_its_source() {
    let root = repo_root();
    let svg = read("docs/architecture.svg");
    let Ok(version) = Command::new("dot").arg("-V").output() else {
        println!("graphviz (dot) is not installed: the SVG is not checked");
        return;
    };
    // `dot - graphviz version 2.43.0 (0)` on stderr; the SVG names its maker's version.
    let version = String::from_utf8_lossy(&version.stderr).trim().to_owned();
    let made_by = version.replace("dot - ", "Generated by ");
    if !svg.contains(&made_by) {
        println!("{version} did not make docs/architecture.svg: not compared");
        return;
    }
    let out = Command::new("dot")
        .args(["-Tsvg"])
        .arg(root.join("docs/architecture.dot"))
        .output()
        .expect("dot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout) == svg,
        "docs/architecture.svg is stale: dot -Tsvg docs/architecture.dot -o docs/architecture.svg"
    );
}
