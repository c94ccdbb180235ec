#!/usr/bin/env bash
# The whole pipeline on one machine, on loopback (the README's first command):
#   Apache RocketMQ (tests/rocketmq/rocketmq.sh) -> cloud-bridge (conf/demo/cloud-bridge.toml)
#   -> edge-agent (conf/demo/edge-agent.toml, with a simulated temperature sensor)
# Then it shows sensor readings arriving at a plain RocketMQ consumer, and a command sent
# by a plain RocketMQ producer coming down to a device subscribed on the agent.
# It keeps running until Ctrl-C (then stops everything it started); `--once` stops after
# the demonstration (exit 0 only when both directions worked).
# Needs Rust; tests/setup.sh (run first) installs the rest when missing: Java 17 + Maven
# (RocketMQ), openssl (the demo certificates), mosquitto-clients (the device).
# STACK_BIN_DIR=target/debug uses already built binaries instead of a release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

once=0
[[ ${1:-} == --once ]] && once=1
run=tests/stack/run
mkdir -p "$run"
say() { echo "=== $*"; }

tests/setup.sh

# ------------------------------------------------------------------ binaries
if [[ -n ${STACK_BIN_DIR:-} ]]; then
  bin=$STACK_BIN_DIR
else
  say "building cloud-bridge and edge-agent (release)"
  cargo build --release -q -p cloud-bridge -p edge-agent
  bin=target/release
fi

# ------------------------------------------------------------------ RocketMQ
say "starting Apache RocketMQ on 127.0.0.1 (name server :19876, broker :20911)"
tests/rocketmq/rocketmq.sh start

# ------------------------------------------------------------------ demo PKI (once)
pki=$run/pki
if [[ ! -f $pki/demo-gw.pem ]]; then
  say "making a demo CA, the bridge's certificate and the gateway's (CN=demo-gw) in $pki"
  mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=shopfloor demo CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
  for who in bridge demo-gw; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
      -keyout "$pki/$who.key" -out "$pki/$who.csr" 2>/dev/null
    ext=$pki/$who.ext
    if [[ $who == bridge ]]; then
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$ext"
    else
      printf 'extendedKeyUsage=clientAuth\n' >"$ext"
    fi
    openssl x509 -req -in "$pki/$who.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -extfile "$ext" -out "$pki/$who.pem" 2>/dev/null
  done
fi

# ------------------------------------------------------------------ bridge + agent
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port what
  for _ in $(seq 1 150); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$2 does not listen on 127.0.0.1:$1; see $run/$2.log" >&2
  tail -20 "$run/$2.log" >&2
  exit 1
}

say "cloud-bridge init (topics and kvconfig on the local RocketMQ)"
"$bin/cloud-bridge" init --config conf/demo/cloud-bridge.toml >"$run/init.log" 2>&1 || { cat "$run/init.log" >&2; exit 1; }
say "starting cloud-bridge: gateways mTLS 127.0.0.1:8883, apps 127.0.0.1:2883 (log $run/cloud-bridge.log)"
# --insecure-demo: the demo's secret ships in conf/demo (loopback listeners only).
"$bin/cloud-bridge" run --insecure-demo --config conf/demo/cloud-bridge.toml >"$run/cloud-bridge.log" 2>&1 &
pids+=($!)
wait_port 8883 cloud-bridge
say "starting edge-agent: devices 127.0.0.1:1883, simulated sensor sim-1 (log $run/edge-agent.log)"
"$bin/edge-agent" run --config conf/demo/edge-agent.toml --state-dir "$run/agent" >"$run/edge-agent.log" 2>&1 &
pids+=($!)
wait_port 1883 edge-agent

# ------------------------------------------------------------------ uplink
say "a plain RocketMQ consumer on topic t1 (sensor sim-1 -> agent -> bridge -> RocketMQ):"
tests/rocketmq/rocketmq.sh tool consume --topic t1 --from-end --count 3 --timeout-ms 30000 |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    print("  RocketMQ got", m["properties"].get("originMqttTopic"), "key", m["keys"], m["body_utf8"])
' || { echo "no readings reached RocketMQ; see $run/*.log" >&2; exit 1; }

# ------------------------------------------------------------------ downlink
say "a device subscribes to cmd/# on the agent; a plain RocketMQ producer sends t1/demo-gw/cmd/valve"
# rocketmq-mqtt's layout: the message goes to first-level topic t1 and is dispatched to
# the LMQ of the exact topic and to that of every matching wildcard subscription (the
# agent subscribed t1/demo-gw/cmd/#).
got=$run/device.out
mosquitto_sub -h 127.0.0.1 -p 1883 -V mqttv5 -i demo-device -q 1 -t 'cmd/#' -C 1 -W 30 -F '%t %p' >"$got" &
sub=$!
sleep 1
tests/rocketmq/rocketmq.sh tool produce --topic t1 --body "open" \
  --prop "INNER_MULTI_DISPATCH=%LMQ%t1%demo-gw%cmd%valve%,%LMQ%t1%demo-gw%cmd%#%" \
  --prop "originMqttTopic=t1/demo-gw/cmd/valve" >/dev/null
if wait "$sub" && [[ -s $got ]]; then
  echo "  device got: $(cat "$got")"
else
  echo "the command did not reach the device; see $run/*.log" >&2
  exit 1
fi

if ((once)); then
  say "both directions work; stopping"
  exit 0
fi
say "running. Try: mosquitto_sub -h 127.0.0.1 -t 'sensors/#' -v   |   tests/rocketmq/rocketmq.sh tool consume --topic t1 --from-end --count 5"
say "edge-agent status: $bin/edge-agent status --config conf/demo/edge-agent.toml --state-dir $run/agent   (Ctrl-C stops)"
wait "${pids[@]}"
