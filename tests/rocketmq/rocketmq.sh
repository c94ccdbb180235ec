#!/usr/bin/env bash
# A real Apache RocketMQ (Java) name server + broker for tests and local use (README.md).
#
#   rocketmq.sh install            resolve jars from Maven Central into cache/lib, compile tool
#   rocketmq.sh start [broker]     start namesrv + broker (or only the broker) bound to
#                                  127.0.0.1, wait until the broker is registered, write run/env;
#                                  no-op when running
#   rocketmq.sh stop [broker] [--kill]  stop both (or only the broker; its data is kept):
#                                  SIGTERM (a graceful broker stop takes ~10 s), SIGKILL after
#                                  30 s (namesrv 3 s); --kill: SIGKILL at once (a crash)
#   rocketmq.sh restart [broker]   stop then start
#   rocketmq.sh status             is each of them up? (exit 3 if one is down)
#   rocketmq.sh env                print run/env (ROCKETMQ_NAMESRV=..., ROCKETMQ_BROKER=..., ...)
#   rocketmq.sh admin ARGS...      mqadmin with -n set, e.g. admin updateTopic -c DefaultCluster -t t1
#   rocketmq.sh tool CMD ARGS...   tool/RmqTool.java: consume, produce, max-offset, pull,
#                                  bench-produce, get-kv, put-kv, wait-ready (see its header)
#   rocketmq.sh clean              stop and delete run/ (data, logs, kvconfig)
#
# Environment: ROCKETMQ_NAMESRV_PORT (19876), ROCKETMQ_BROKER_PORT (20911; the broker also
# listens on port-2 (fast/VIP channel) and port+1 (HA)), ROCKETMQ_START_TIMEOUT (120 s),
# ROCKETMQ_SEND_THREADS (the broker's sendMessageThreadPoolNums, 1),
# JAVA / JAVAC (java / javac on PATH).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$HERE/cache"
LIB="$CACHE/lib"
TOOL_DIR="$CACHE/tool"
JAVA="${JAVA:-java}"
JAVAC="${JAVAC:-javac}"
VERSION="$(sed -n 's:.*<rocketmq.version>\(.*\)</rocketmq.version>.*:\1:p' "$HERE/pom.xml")"
NAMESRV_PORT="${ROCKETMQ_NAMESRV_PORT:-19876}"
BROKER_PORT="${ROCKETMQ_BROKER_PORT:-20911}"
# State (configs, pid files, env, logs, store) of the default instance in run/, of one on
# other ports in run/<namesrv port>-<broker port>/ (`clean` of the default removes all).
RUN="$HERE/run"
[[ $NAMESRV_PORT == 19876 && $BROKER_PORT == 20911 ]] || RUN="$HERE/run/$NAMESRV_PORT-$BROKER_PORT"
LOGS="$RUN/logs"
STORE="$RUN/store"
HOST=127.0.0.1
NAMESRV="$HOST:$NAMESRV_PORT"
BROKER="$HOST:$BROKER_PORT"
CLUSTER=DefaultCluster
BROKER_NAME=broker-a
START_TIMEOUT="${ROCKETMQ_START_TIMEOUT:-120}"
NAMESRV_MAIN=org.apache.rocketmq.namesrv.NamesrvStartup
BROKER_MAIN=org.apache.rocketmq.broker.BrokerStartup

log() { echo "rocketmq.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Options common to every JVM we start ($1: which of RocketMQ's logback configs to use; with
# all jars on one class path, logback would otherwise pick rmq.broker.logback.xml for all).
# user.home decides where those configs write (\$user.home/logs/rocketmqlogs) and where the
# namesrv keeps kvConfig.json.
common_jvm_opts() {
  echo "-Duser.home=$RUN -Drocketmq.home.dir=$RUN -Drmq.logback.configurationFile=rmq.$1.logback.xml" \
       "-Djava.net.preferIPv4Stack=true -XX:-OmitStackTraceInFastThrow -Dtls.server.mode=disabled"
}

# ---------------------------------------------------------------- install
installed() {
  [[ -f "$CACHE/installed-$VERSION" && -f "$TOOL_DIR/RmqTool.class" \
     && ! "$HERE/tool/RmqTool.java" -nt "$TOOL_DIR/RmqTool.class" ]]
}

cmd_install() {
  if installed; then log "RocketMQ $VERSION already installed in $LIB"; return 0; fi
  command -v mvn >/dev/null || die "mvn (Maven) not found"
  command -v "$JAVAC" >/dev/null || die "javac not found (install a JDK 17)"
  if [[ ! -f "$CACHE/installed-$VERSION" ]]; then
    log "resolving Apache RocketMQ $VERSION from Maven Central into $LIB ..."
    rm -rf "$LIB" "$CACHE"/installed-*
    mkdir -p "$LIB"
    local try
    for try in 1 2 3; do
      if mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies \
           -DoutputDirectory="$LIB" -DincludeScope=runtime; then break; fi
      [[ $try == 3 ]] && die "mvn dependency:copy-dependencies failed 3 times"
      log "mvn failed (try $try), retrying in 5 s"; sleep 5
    done
    ls "$LIB"/rocketmq-broker-"$VERSION".jar >/dev/null || die "rocketmq-broker jar missing in $LIB"
    touch "$CACHE/installed-$VERSION"
  fi
  log "compiling tool/RmqTool.java into $TOOL_DIR"
  rm -rf "$TOOL_DIR"; mkdir -p "$TOOL_DIR"
  "$JAVAC" -nowarn -encoding UTF-8 --release 17 -cp "$LIB/*" -d "$TOOL_DIR" "$HERE/tool/RmqTool.java"
  log "installed RocketMQ $VERSION ($(du -sh "$LIB" | cut -f1) in cache/lib)"
}

# ---------------------------------------------------------------- processes
pidfile() { echo "$RUN/$1.pid"; }
main_of() { if [[ $1 == namesrv ]]; then echo "$NAMESRV_MAIN"; else echo "$BROKER_MAIN"; fi; }

# pid of a running component, or nothing (checks the command line to survive pid reuse)
running_pid() {
  local f pid
  f="$(pidfile "$1")"
  [[ -f $f ]] || return 1
  pid="$(cat "$f")"
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$(main_of "$1")" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

tail_logs() {
  local f
  for f in "$LOGS/$1.out" "$LOGS/rocketmqlogs/$1.log"; do
    [[ -f $f ]] && { echo "----- tail $f" >&2; grep -v -- '|-INFO in ' "$f" | tail -n 30 >&2 || true; }
  done
  return 0
}

write_configs() {
  mkdir -p "$RUN" "$LOGS" "$STORE"
  cat >"$RUN/namesrv.conf" <<EOF
listenPort=$NAMESRV_PORT
bindAddress=$HOST
# The name server's own client would otherwise probe <first non-loopback IP>:port every few
# seconds (NetworkUtil.getLocalAddress): keep all traffic on the loopback.
scanAvailableNameSrv=false
EOF
  # Small, lean, loopback-only broker. Files are memory-mapped sparse files; sizes below
  # keep the address space and the disk footprint small.
  cat >"$RUN/broker.conf" <<EOF
brokerClusterName=$CLUSTER
brokerName=$BROKER_NAME
brokerId=0
brokerRole=ASYNC_MASTER
flushDiskType=ASYNC_FLUSH
listenPort=$BROKER_PORT
bindAddress=$HOST
brokerIP1=$HOST
brokerIP2=$HOST
haListenPort=$((BROKER_PORT + 1))
namesrvAddr=$NAMESRV
storePathRootDir=$STORE
storePathCommitLog=$STORE/commitlog
enableLmq=true
enableMultiDispatch=true
autoCreateTopicEnable=true
autoCreateSubscriptionGroup=true
defaultTopicQueueNums=4
# 64 MiB commit log files (default 1 GiB), 600 KB consume queue files (default 6 MB:
# one per LMQ), small index files (default ~420 MB).
mappedFileSizeCommitLog=67108864
mappedFileSizeConsumeQueue=600000
maxHashSlotNum=100000
maxIndexNum=400000
# Timer (5.x delay messages and POP revive; without it the broker logs 8 warnings a second):
# smaller timer log files (default 100 MB).
mappedFileSizeTimerLog=8388608
warmMapedFileEnable=false
transientStorePoolEnable=false
traceTopicEnable=false
# Keep disk use bounded during long local use: delete commit logs older than 1 h at any hour.
fileReservedTime=1
deleteWhen=00;01;02;03;04;05;06;07;08;09;10;11;12;13;14;15;16;17;18;19;20;21;22;23
diskMaxUsedSpaceRatio=90
# Compaction topics (cloud-bridge's retained messages, sessions and wills): 8 MiB files and
# a 30 s schedule instead of 100 MiB and 15 min, so that small state is compacted at all;
# a 16 MiB key map per run instead of 100 MiB of heap.
enableCompaction=true
compactionScheduleInternal=30000
compactionMappedFileSize=8388608
compactionCqMappedFileSize=920000
maxOffsetMapSize=16777216
# On a 2-core machine that also compiles, the default 200 ms send-queue wait (and 1 s page
# cache wait) make the broker refuse sends as busy (code 2) under load: be patient instead.
waitTimeMillsInSendQueue=5000
osPageCacheBusyTimeOutMills=5000
# One send thread: the broker appends one connection's sends in arrival order, so the
# bridge may pipeline one topic's sends (it reads this setting; docs/configure-bridge.md).
# RocketMQ 4.x's default; the commit log is appended under one lock anyway.
sendMessageThreadPoolNums=${ROCKETMQ_SEND_THREADS:-1}
pullMessageThreadPoolNums=8
EOF
}

write_env() {
  cat >"$RUN/env.tmp" <<EOF
ROCKETMQ_NAMESRV=$NAMESRV
ROCKETMQ_BROKER=$BROKER
ROCKETMQ_CLUSTER=$CLUSTER
ROCKETMQ_BROKER_NAME=$BROKER_NAME
EOF
  mv "$RUN/env.tmp" "$RUN/env"
}

launch() { # name heap-opts main args...
  local name="$1" heap="$2"; shift 2
  # Every LMQ (each distinct MQTT topic) keeps a file open in the broker: give it the
  # hard limit of open files, not a soft default such as 1024 (RocketMQ asks for 655350).
  # shellcheck disable=SC2046,SC2086
  (ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
   exec setsid nohup "$JAVA" $heap $(common_jvm_opts "$name") -cp "$LIB/*" "$@" \
    >>"$LOGS/$name.out" 2>&1 </dev/null 9>&-) &
  echo $! >"$(pidfile "$name")"
  disown
  LAUNCHED+=("$name")
}

start_namesrv() {
  if running_pid namesrv >/dev/null; then return 0; fi
  port_open "$NAMESRV_PORT" && die "port $NAMESRV_PORT is in use by another process"
  log "starting name server on $NAMESRV"
  launch namesrv "-XX:+UseG1GC -Xms64m -Xmx128m -Xss512k -XX:MaxDirectMemorySize=64m" \
    "$NAMESRV_MAIN" -c "$RUN/namesrv.conf"
}

start_broker() {
  if running_pid broker >/dev/null; then return 0; fi
  local p
  for p in "$BROKER_PORT" $((BROKER_PORT - 2)) $((BROKER_PORT + 1)); do
    port_open "$p" && die "port $p (broker listenPort $BROKER_PORT, -2, +1) is in use by another process"
  done
  log "starting broker on $BROKER (fast channel :$((BROKER_PORT - 2)), HA :$((BROKER_PORT + 1)))"
  launch broker "-XX:+UseG1GC -Xms256m -Xmx512m -Xss512k -XX:MaxDirectMemorySize=256m" \
    "$BROKER_MAIN" -c "$RUN/broker.conf" -n "$NAMESRV"
}

# what this call launched is stopped again: no half-started RocketMQ is left behind
LAUNCHED=()
start_failed() {
  local name
  for name in "${LAUNCHED[@]}"; do stop_one "$name" KILL; done
  log "start failed (logs in $LOGS; ROCKETMQ_START_TIMEOUT=$START_TIMEOUT)"; exit 1
}

# wait until the namesrv answers and lists our broker
wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT)) name
  for name in namesrv broker; do
    while :; do
      running_pid "$name" >/dev/null || { log "ERROR: $name exited during start-up"; tail_logs "$name"; start_failed; }
      if [[ $name == namesrv ]] && port_open "$NAMESRV_PORT"; then break; fi
      if [[ $name == broker ]] && port_open "$BROKER_PORT"; then break; fi
      ((SECONDS < deadline)) || { log "ERROR: $name not listening after $START_TIMEOUT s"; tail_logs "$name"; start_failed; }
      sleep 0.3
    done
  done
  # A real request: the broker must be registered in the name server.
  local left=$((deadline - SECONDS)); ((left > 5)) || left=5
  if ! run_tool wait-ready --broker "$BROKER" --timeout-ms "$((left * 1000))" >/dev/null; then
    log "ERROR: broker not registered in the name server after $START_TIMEOUT s"; tail_logs namesrv; tail_logs broker
    start_failed
  fi
}

cmd_start() {
  installed || cmd_install
  local what="${1:-all}" t0=$SECONDS
  if [[ $what != namesrv ]] && running_pid namesrv >/dev/null && running_pid broker >/dev/null \
     && port_open "$NAMESRV_PORT" && port_open "$BROKER_PORT" && [[ -f $RUN/env ]]; then
    log "already running: namesrv $NAMESRV, broker $BROKER"; return 0
  fi
  mkdir -p "$RUN"
  if [[ $what == all ]] && ! running_pid namesrv >/dev/null && port_open "$NAMESRV_PORT"; then
    # Not ours (e.g. started from another checkout of this repo): use it if it is a RocketMQ
    # name server with our broker registered, as the tests share one broker anyway.
    if run_tool wait-ready --broker "$BROKER" --timeout-ms 5000 >/dev/null 2>&1; then
      write_env
      log "using the RocketMQ already running on $NAMESRV / $BROKER (not started from here)"
      return 0
    fi
    die "port $NAMESRV_PORT is in use by something that is not a RocketMQ name server with broker $BROKER"
  fi
  write_configs
  case "$what" in
    all) start_namesrv; start_broker ;;
    broker) running_pid namesrv >/dev/null || die "name server not running: use 'start' first"; start_broker ;;
    namesrv) start_namesrv ;;
    *) die "start: unknown component '$what'" ;;
  esac
  if [[ $what == namesrv ]]; then
    while ! port_open "$NAMESRV_PORT"; do sleep 0.3; done
  else
    wait_ready
    write_env
  fi
  log "ready in $((SECONDS - t0)) s: namesrv $NAMESRV, broker $BROKER ($CLUSTER/$BROKER_NAME); env in $RUN/env"
}

stop_one() { # name [KILL]
  local name="$1" sig="${2:-TERM}" pid i grace=30
  # The name server keeps nothing but kvConfig.json (written at each update): no need to
  # wait 10 s for its graceful Netty shutdown. The broker flushes its store: let it finish.
  [[ $name == namesrv ]] && grace=3
  pid="$(running_pid "$name")" || { rm -f "$(pidfile "$name")"; return 0; }
  log "stopping $name (pid $pid, SIG$sig)"
  kill -"$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 5; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "$name still running after $grace s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$(pidfile "$name")"
}

cmd_stop() { # [all|broker|namesrv] [--kill]
  local what=all sig=TERM a
  for a in "$@"; do
    case "$a" in
      --kill) sig=KILL ;;
      all | broker | namesrv) what="$a" ;;
      *) die "stop: unknown argument '$a'" ;;
    esac
  done
  case "$what" in
    all) stop_one broker "$sig"; stop_one namesrv "$sig" ;;
    *) stop_one "$what" "$sig" ;;
  esac
}

cmd_status() {
  local rc=0 name pid
  for name in namesrv broker; do
    local addr="$NAMESRV" port="$NAMESRV_PORT"
    [[ $name == broker ]] && { addr="$BROKER"; port="$BROKER_PORT"; }
    if pid="$(running_pid "$name")"; then
      echo "$name: up (pid $pid, $addr)"
    elif port_open "$port"; then
      echo "$name: up ($addr, not started from here)"
    else
      echo "$name: down"; rc=3
    fi
  done
  return $rc
}

run_tool() {
  installed || cmd_install >&2
  local jit="-XX:TieredStopAtLevel=1" # fast start-up; full JIT for benchmarks
  [[ ${1:-} == bench-* ]] && jit=""
  # shellcheck disable=SC2046
  "$JAVA" -Xms32m -Xmx256m $jit -XX:+UseSerialGC $(common_jvm_opts client) \
    -Drocketmq.log.level=WARN -Drocketmq.log.root="$LOGS/tool" \
    -cp "$TOOL_DIR:$LIB/*" RmqTool "$@" -n "$NAMESRV" --broker-addr "$BROKER"
}

cmd_admin() {
  installed || cmd_install >&2
  local n=(-n "$NAMESRV")
  [[ $# == 0 ]] && n=() # plain usage
  # Through RmqTool: MQAdminStartup itself spends ~3 s in its client shutdown.
  # shellcheck disable=SC2046
  "$JAVA" -Xms32m -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC $(common_jvm_opts tools) \
    -cp "$TOOL_DIR:$LIB/*" RmqTool mqadmin "$@" "${n[@]}"
}

# start/stop/install from two shells at once: one at a time
lock() { mkdir -p "$RUN"; exec 9>"$RUN/.lock"; flock 9; }

case "${1:-}" in
  install) lock; cmd_install ;;
  start) lock; cmd_start "${2:-all}" ;;
  stop) lock; shift; cmd_stop "$@" ;;
  restart) lock; cmd_stop "${2:-all}"; cmd_start "${2:-all}" ;;
  status) cmd_status ;;
  env) [[ -f $RUN/env ]] || die "no $RUN/env: run 'start' first"; cat "$RUN/env" ;;
  admin) shift; cmd_admin "$@" ;;
  tool) shift; run_tool "$@" ;;
  clean) lock; cmd_stop all; rm -rf "$RUN"; log "removed $RUN" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
