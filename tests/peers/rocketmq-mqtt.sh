#!/usr/bin/env bash
# The real Apache rocketmq-mqtt (Java), built from its unchanged source, run beside the test
# RocketMQ as the reference peer of cloud-bridge (tests/peers/README.md).
#
#   rocketmq-mqtt.sh install   build it once with Maven (~2-4 min) into cache/ (git-ignored);
#                              a no-op when built. Exit 4 when Maven Central is unreachable
#   rocketmq-mqtt.sh start     create its RocketMQ topics, start the meta service (JRaft) and
#                              the MQTT process on loopback ports, wait until MQTT answers;
#                              a no-op when running (installs first when needed)
#   rocketmq-mqtt.sh stop      stop both (SIGTERM, SIGKILL after 15 s)
#   rocketmq-mqtt.sh status    is each of them up? (exit 3 if one is down)
#   rocketmq-mqtt.sh env       print run/<port>/env (ROCKETMQ_MQTT_ADDR=127.0.0.1:PORT, ...)
#   rocketmq-mqtt.sh clean     stop and delete its state (raft data, retained messages, logs)
#
# Environment:
#   ROCKETMQ_MQTT_PORT         MQTT port (22883); WebSocket +2, notify RPC +3, exporter +4,
#                              meta (JRaft) +5, TLS +7 (22885, 22886, 22887, 22888, 22890)
#   ROCKETMQ_MQTT_USERNAME / ROCKETMQ_MQTT_SECRET   HmacSHA1 credentials ("demo" /
#                              "test-secret", as the cloud-bridge tests use)
#   ROCKETMQ_NAMESRV           name server (else from tests/rocketmq/rocketmq.sh env, which
#                              honours ROCKETMQ_NAMESRV_PORT / ROCKETMQ_BROKER_PORT)
#   ROCKETMQ_MQTT_START_TIMEOUT  seconds to wait for the MQTT port (120)
# It binds 0.0.0.0 (rocketmq-mqtt has no bind-address setting): send it traffic on
# 127.0.0.1 only. Heaps are kept small (meta 64-192 MB, MQTT 128-384 MB).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
COMMIT=6847f21
VERSION=1.0.2-SNAPSHOT
TARBALL="$HERE/rocketmq-mqtt/rocketmq-mqtt-$COMMIT-src.tar.gz"
CACHE="$HERE/cache/rocketmq-mqtt-$COMMIT"
DIST="$CACHE/dist"
JAVA="${JAVA:-java}"
PORT="${ROCKETMQ_MQTT_PORT:-22883}"
WS_PORT=$((PORT + 2))
RPC_PORT=$((PORT + 3))
EXPORTER_PORT=$((PORT + 4))
META_PORT=$((PORT + 5))
TLS_PORT=$((PORT + 7))
USERNAME="${ROCKETMQ_MQTT_USERNAME:-demo}"
SECRET="${ROCKETMQ_MQTT_SECRET:-test-secret}"
START_TIMEOUT="${ROCKETMQ_MQTT_START_TIMEOUT:-120}"
RUN="$HERE/run/rocketmq-mqtt-$PORT"
HOST=127.0.0.1
# The topics its service.conf names (cloud-bridge's [topics] defaults use the same names).
NOTIFY_RETRY_TOPIC=eventNotifyRetryTopic
CLIENT_RETRY_TOPIC=clientRetryTopic
CLIENT_P2P_TOPIC=clientP2pTopic
META_MAIN=org.apache.rocketmq.mqtt.meta.starter.MetaStartup
MQTT_MAIN=org.apache.rocketmq.mqtt.cs.starter.Startup

log() { echo "rocketmq-mqtt.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- install
installed() { [[ -f "$CACHE/installed" && -d "$DIST/lib" ]]; }

central_reachable() {
  if command -v curl >/dev/null; then
    curl -sfI --max-time 15 https://repo.maven.apache.org/maven2/ >/dev/null
  else
    (exec 3<>/dev/tcp/repo.maven.apache.org/443) 2>/dev/null
  fi
}

cmd_install() {
  if installed; then log "rocketmq-mqtt $COMMIT already built in $DIST"; return 0; fi
  command -v mvn >/dev/null || die "mvn (Maven) not found (tests/setup.sh installs it)"
  command -v javac >/dev/null || die "javac not found (install a JDK 17; tests/setup.sh does)"
  [[ -f $TARBALL ]] || die "source tarball $TARBALL missing"
  local t0=$SECONDS src="$CACHE/src" try
  rm -rf "$CACHE"; mkdir -p "$src"
  tar -xzf "$TARBALL" -C "$src"
  log "building rocketmq-mqtt $COMMIT with Maven (about 2-4 minutes on 2 cores) ..."
  for try in 1 2 3; do
    if (cd "$src" && mvn -q -B -Dstyle.color=never -Prelease-all -DskipTests -Dcheckstyle.skip \
          -Drat.skip -Dmaven.javadoc.skip=true package >"$CACHE/build.log" 2>&1); then break; fi
    if ! central_reachable; then
      log "Maven Central (repo.maven.apache.org) is unreachable: cannot build rocketmq-mqtt"
      rm -rf "$CACHE"; exit 4
    fi
    [[ $try == 3 ]] && { tail -n 40 "$CACHE/build.log" >&2; die "mvn package failed 3 times (log: $CACHE/build.log)"; }
    log "mvn failed (try $try), retrying in 5 s"; sleep 5
  done
  local built="$src/distribution/target/rocketmq-mqtt-$VERSION/rocketmq-mqtt-$VERSION"
  [[ -d $built/lib ]] || die "no distribution in $built"
  mkdir -p "$DIST"
  cp -r "$built/lib" "$built/conf" "$DIST/"
  cp "$src/LICENSE" "$src/NOTICE" "$DIST/"
  rm -rf "$src"
  touch "$CACHE/installed"
  log "built rocketmq-mqtt $COMMIT in $((SECONDS - t0)) s ($(du -sh "$DIST" | cut -f1) in $DIST)"
}

# ---------------------------------------------------------------- processes
pidfile() { echo "$RUN/$1.pid"; }
main_of() { if [[ $1 == meta ]]; then echo "$META_MAIN"; else echo "$MQTT_MAIN"; fi; }

running_pid() {
  local f pid
  f="$(pidfile "$1")"
  [[ -f $f ]] || return 1
  pid="$(cat "$f")"
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$(main_of "$1")" || return 1
  echo "$pid"
}

# A process just launched: alive is enough. Its command line is still the launching shell's
# until the subshell execs java, so running_pid (which checks the main class to reject a
# reused pid) can miss it for a moment on a loaded machine.
launched_alive() {
  local f
  f="$(pidfile "$1")"
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

namesrv() {
  if [[ -n ${ROCKETMQ_NAMESRV:-} ]]; then echo "$ROCKETMQ_NAMESRV"; return; fi
  "$REPO/tests/rocketmq/rocketmq.sh" env | sed -n 's/^ROCKETMQ_NAMESRV=//p'
}

write_configs() { # namesrv
  mkdir -p "$RUN/conf" "$RUN/meta" "$RUN/logs"
  : >"$RUN/logs/meta.out"; : >"$RUN/logs/mqtt.out"
  cp "$DIST/conf/logback.xml" "$DIST/conf/spring.xml" "$DIST/conf/meta_spring.xml" "$RUN/conf/"
  cat >"$RUN/conf/service.conf" <<EOF
username=$USERNAME
secretKey=$SECRET
NAMESRV_ADDR=$1
eventNotifyRetryTopic=$NOTIFY_RETRY_TOPIC
clientRetryTopic=$CLIENT_RETRY_TOPIC
clientP2pTopic=$CLIENT_P2P_TOPIC
csRpcPort=$RPC_PORT
metaAddr=$HOST:$META_PORT
EOF
  cat >"$RUN/conf/connect.conf" <<EOF
mqttPort=$PORT
mqttTlsPort=$TLS_PORT
mqttWsPort=$WS_PORT
rpcListenPort=$RPC_PORT
exporterPort=$EXPORTER_PORT
enablePrometheus=false
EOF
  cat >"$RUN/conf/meta.conf" <<EOF
selfAddress=$HOST:$META_PORT
membersAddress=$HOST:$META_PORT
EOF
  cat >"$RUN/env.tmp" <<EOF
ROCKETMQ_MQTT_ADDR=$HOST:$PORT
ROCKETMQ_MQTT_USERNAME=$USERNAME
ROCKETMQ_MQTT_SECRET=$SECRET
EOF
}

launch() { # name heap main
  local name="$1" heap="$2" main="$3"
  # shellcheck disable=SC2086
  (cd "$RUN" && exec env META_BASE_DIR="$RUN/meta" setsid nohup "$JAVA" $heap -XX:+UseSerialGC \
     -Xss512k -XX:MaxDirectMemorySize=128m -Duser.home="$RUN" \
     -Dlogback.configurationFile="$RUN/conf/logback.xml" -Djava.net.preferIPv4Stack=true \
     -cp "$RUN/conf:$DIST/lib/*" "$main" >>"$RUN/logs/$name.out" 2>&1 </dev/null 9>&-) &
  echo $! >"$(pidfile "$name")"
  disown
}

tail_logs() {
  local f
  for f in "$RUN/logs/$1.out" "$RUN/logs/mqtt.log"; do
    [[ -f $f ]] && { echo "----- tail $f" >&2; tail -n 30 "$f" >&2 || true; }
  done
  return 0
}

cmd_start() {
  installed || cmd_install
  if running_pid meta >/dev/null && running_pid mqtt >/dev/null && port_open "$PORT"; then
    log "already running: MQTT $HOST:$PORT"; return 0
  fi
  local t0=$SECONDS ns p
  ns="$(namesrv)"
  [[ -n $ns ]] || die "no name server: start tests/rocketmq/rocketmq.sh first or set ROCKETMQ_NAMESRV"
  for p in "$PORT" "$WS_PORT" "$RPC_PORT" "$META_PORT" "$TLS_PORT"; do
    if port_open "$p" && ! { running_pid meta >/dev/null || running_pid mqtt >/dev/null; }; then
      die "port $p is in use by another process (set ROCKETMQ_MQTT_PORT)"
    fi
  done
  cmd_stop
  write_configs "$ns"
  # The retry, notify and p2p topics must exist before it starts (it consumes the first two).
  local topic cluster
  cluster="$("$REPO/tests/rocketmq/rocketmq.sh" env 2>/dev/null | sed -n 's/^ROCKETMQ_CLUSTER=//p')"
  for topic in "$NOTIFY_RETRY_TOPIC" "$CLIENT_RETRY_TOPIC" "$CLIENT_P2P_TOPIC"; do
    "$REPO/tests/rocketmq/rocketmq.sh" admin updateTopic -c "${cluster:-DefaultCluster}" -t "$topic" >/dev/null ||
      die "cannot create topic $topic on $ns"
  done
  # It refuses to start without kvconfig LMQ/ALL_FIRST_TOPICS (cloud-bridge init writes it and
  # merges its own first-level topics into it): give a fresh cluster one placeholder topic.
  if ! "$REPO/tests/rocketmq/rocketmq.sh" tool get-kv --namespace LMQ --key ALL_FIRST_TOPICS | grep -q '"value":"'; then
    "$REPO/tests/rocketmq/rocketmq.sh" admin updateTopic -c "${cluster:-DefaultCluster}" -t rmqpeer >/dev/null ||
      die "cannot create topic rmqpeer on $ns"
    "$REPO/tests/rocketmq/rocketmq.sh" tool put-kv --namespace LMQ --key ALL_FIRST_TOPICS --value rmqpeer >/dev/null ||
      die "cannot write kvconfig LMQ/ALL_FIRST_TOPICS on $ns"
  fi
  # ... and LMQ_CONNECT_NODES (the servers it notifies of new messages on csRpcPort).
  if ! "$REPO/tests/rocketmq/rocketmq.sh" tool get-kv --namespace LMQ --key LMQ_CONNECT_NODES | grep -q '"value":"'; then
    "$REPO/tests/rocketmq/rocketmq.sh" tool put-kv --namespace LMQ --key LMQ_CONNECT_NODES --value "$HOST" >/dev/null ||
      die "cannot write kvconfig LMQ/LMQ_CONNECT_NODES on $ns"
  fi
  log "starting meta service (JRaft) on $HOST:$META_PORT"
  launch meta "-Xms64m -Xmx192m" "$META_MAIN"
  local deadline=$((SECONDS + START_TIMEOUT))
  while ! port_open "$META_PORT"; do
    launched_alive meta || { log "meta service exited"; tail_logs meta; cmd_stop; exit 1; }
    ((SECONDS < deadline)) || { log "meta service not listening after $START_TIMEOUT s"; tail_logs meta; cmd_stop; exit 1; }
    sleep 0.5
  done
  log "starting MQTT process on $HOST:$PORT (name server $ns)"
  launch mqtt "-Xms128m -Xmx384m" "$MQTT_MAIN"
  while ! port_open "$PORT"; do
    launched_alive mqtt || { log "MQTT process exited"; tail_logs mqtt; cmd_stop; exit 1; }
    # A failed Spring start leaves the JVM running without the port.
    grep -q "Error creating bean" "$RUN/logs/mqtt.out" 2>/dev/null &&
      { log "MQTT process failed to start"; tail_logs mqtt; cmd_stop; exit 1; }
    ((SECONDS < deadline)) || { log "MQTT port not open after $START_TIMEOUT s"; tail_logs mqtt; cmd_stop; exit 1; }
    sleep 0.5
  done
  mv "$RUN/env.tmp" "$RUN/env"
  log "ready in $((SECONDS - t0)) s: MQTT $HOST:$PORT, meta $HOST:$META_PORT; env in $RUN/env"
}

stop_one() {
  local name="$1" pid i
  pid="$(running_pid "$name")" || { rm -f "$(pidfile "$name")"; return 0; }
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 75; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "$name still running after 15 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$(pidfile "$name")"
}

cmd_stop() { stop_one mqtt; stop_one meta; rm -f "$RUN/env"; }

cmd_status() {
  local rc=0 name pid
  for name in meta mqtt; do
    if pid="$(running_pid "$name")"; then echo "$name: up (pid $pid)"; else echo "$name: down"; rc=3; fi
  done
  return $rc
}

lock() { mkdir -p "$RUN"; exec 9>"$RUN/.lock"; flock 9; }
install_lock() { mkdir -p "$HERE/cache"; exec 8>"$HERE/cache/.lock-$COMMIT"; flock 8; }

case "${1:-}" in
  install) install_lock; cmd_install ;;
  start) install_lock; installed || cmd_install; exec 8>&-; lock; cmd_start ;;
  stop) lock; cmd_stop ;;
  status) cmd_status ;;
  env) [[ -f $RUN/env ]] || die "no $RUN/env: run 'start' first"; cat "$RUN/env" ;;
  clean) lock; cmd_stop; rm -rf "$RUN"; log "removed $RUN" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
