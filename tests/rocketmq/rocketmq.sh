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
#   rocketmq.sh cluster CMD ...    the same commands for a cluster of two name servers
#                                  (namesrv-1, namesrv-2) and two brokers (broker-a,
#                                  broker-b) in run/cluster/: e.g. `cluster start`,
#                                  `cluster stop broker-a --kill` (a crash), `cluster start
#                                  broker-a`, `cluster stop namesrv-1`, `cluster env`
#                                  (ROCKETMQ_NAMESRV lists both name servers)
#
# Environment: ROCKETMQ_NAMESRV_PORT (19876; cluster: 19896 and +1), ROCKETMQ_BROKER_PORT
# (20911; cluster: 20941 and +20; a broker also listens on port-2 (fast/VIP channel) and
# port+1 (HA)), ROCKETMQ_START_TIMEOUT (120 s),
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
MODE=single
if [[ ${1:-} == cluster ]]; then MODE=cluster; shift; fi
HOST=127.0.0.1
CLUSTER=DefaultCluster
# Components: name servers and brokers, by name, with their ports. A single instance keeps
# the names `namesrv` and `broker` (broker name broker-a); a cluster has two of each.
declare -A PORT BROKER_NAME_OF
if [[ $MODE == single ]]; then
  NAMESRV_PORT="${ROCKETMQ_NAMESRV_PORT:-19876}"
  BROKER_PORT="${ROCKETMQ_BROKER_PORT:-20911}"
  NAMESRVS=(namesrv); BROKERS=(broker)
  PORT[namesrv]=$NAMESRV_PORT; PORT[broker]=$BROKER_PORT; BROKER_NAME_OF[broker]=broker-a
  # State (configs, pid files, env, logs, store) of the default instance in run/, of one on
  # other ports in run/<namesrv port>-<broker port>/ (`clean` of the default removes all).
  RUN="$HERE/run"
  [[ $NAMESRV_PORT == 19876 && $BROKER_PORT == 20911 ]] || RUN="$HERE/run/$NAMESRV_PORT-$BROKER_PORT"
else
  NAMESRV_PORT="${ROCKETMQ_NAMESRV_PORT:-19896}"
  BROKER_PORT="${ROCKETMQ_BROKER_PORT:-20941}"
  NAMESRVS=(namesrv-1 namesrv-2); BROKERS=(broker-a broker-b)
  PORT[namesrv-1]=$NAMESRV_PORT; PORT[namesrv-2]=$((NAMESRV_PORT + 1))
  PORT[broker-a]=$BROKER_PORT; PORT[broker-b]=$((BROKER_PORT + 20))
  BROKER_NAME_OF[broker-a]=broker-a; BROKER_NAME_OF[broker-b]=broker-b
  RUN="$HERE/run/cluster"
  [[ $NAMESRV_PORT == 19896 && $BROKER_PORT == 20941 ]] || RUN="$HERE/run/cluster-$NAMESRV_PORT-$BROKER_PORT"
fi
LOGS="$RUN/logs"
STORE="$RUN/store"
addr_of() { echo "$HOST:${PORT[$1]}"; }
# Every name server, `;`-separated (NAMESRV_ADDR style).
NAMESRV="$(for n in "${NAMESRVS[@]}"; do addr_of "$n"; done | paste -sd ';')"
BROKER="$(addr_of "${BROKERS[0]}")"
BROKER_NAME="${BROKER_NAME_OF[${BROKERS[0]}]}"
is_namesrv() { [[ $1 == namesrv* ]]; }
known() { [[ -n ${PORT[$1]:-} ]]; }
START_TIMEOUT="${ROCKETMQ_START_TIMEOUT:-120}"
NAMESRV_MAIN=org.apache.rocketmq.namesrv.NamesrvStartup
BROKER_MAIN=org.apache.rocketmq.broker.BrokerStartup

log() { echo "rocketmq.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Options common to every JVM we start ($1: which of RocketMQ's logback configs to use; with
# all jars on one class path, logback would otherwise pick rmq.broker.logback.xml for all).
# user.home decides where those configs write (\$user.home/logs/rocketmqlogs) and where the
# namesrv keeps kvConfig.json.
# In a cluster, each member has its own user.home (two name servers must not share one
# kvConfig.json), under run/cluster/home/<name>.
common_jvm_opts() {
  local kind="$1" home="$RUN"
  case "$1" in namesrv*) kind=namesrv ;; broker*) kind=broker ;; esac
  if [[ $MODE == cluster && ($1 == namesrv* || $1 == broker*) ]]; then home="$RUN/home/$1"; fi
  mkdir -p "$home"
  echo "-Duser.home=$home -Drocketmq.home.dir=$home -Drmq.logback.configurationFile=rmq.$kind.logback.xml" \
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
main_of() { if is_namesrv "$1"; then echo "$NAMESRV_MAIN"; else echo "$BROKER_MAIN"; fi; }

# pid of a running component, or nothing (checks the command line to survive pid reuse)
running_pid() {
  local f pid
  f="$(pidfile "$1")"
  [[ -f $f ]] || return 1
  pid="$(cat "$f")"
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null \
     && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$(main_of "$1")"; then
    echo "$pid"; return 0
  fi
  # Started from a shell with job control, `setsid` forks (the launched subshell leads its
  # process group) and the recorded pid is gone: find the JVM by its config file.
  pid="$(pgrep -f -- "$(main_of "$1") -c $RUN/$1.conf" | head -n 1)" || return 1
  [[ -n $pid ]] || return 1
  echo "$pid" >"$f"
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

tail_logs() {
  local f
  local kind="${1%%-*}"
  for f in "$LOGS/$1.out" "$LOGS/rocketmqlogs/$kind.log" "$RUN/home/$1/logs/rocketmqlogs/$kind.log"; do
    [[ -f $f ]] && { echo "----- tail $f" >&2; grep -v -- '|-INFO in ' "$f" | tail -n 30 >&2 || true; }
  done
  return 0
}

write_configs() {
  mkdir -p "$RUN" "$LOGS" "$STORE"
  local n b
  for n in "${NAMESRVS[@]}"; do write_namesrv_conf "$n"; done
  for b in "${BROKERS[@]}"; do write_broker_conf "$b"; done
}

write_namesrv_conf() {
  cat >"$RUN/$1.conf" <<EOF
listenPort=${PORT[$1]}
bindAddress=$HOST
# The name server's own client would otherwise probe <first non-loopback IP>:port every few
# seconds (NetworkUtil.getLocalAddress): keep all traffic on the loopback.
scanAvailableNameSrv=false
EOF
}

write_broker_conf() {
  local name="$1" port="${PORT[$1]}" store="$STORE"
  [[ $MODE == cluster ]] && store="$STORE/$1"
  # Small, lean, loopback-only broker. Files are memory-mapped sparse files; sizes below
  # keep the address space and the disk footprint small.
  cat >"$RUN/$name.conf" <<EOF
brokerClusterName=$CLUSTER
brokerName=${BROKER_NAME_OF[$name]}
brokerId=0
brokerRole=ASYNC_MASTER
flushDiskType=ASYNC_FLUSH
listenPort=$port
bindAddress=$HOST
brokerIP1=$HOST
brokerIP2=$HOST
haListenPort=$((port + 1))
namesrvAddr=$NAMESRV
storePathRootDir=$store
storePathCommitLog=$store/commitlog
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
  local brokers b
  brokers="$(for b in "${BROKERS[@]}"; do echo "${BROKER_NAME_OF[$b]}=$(addr_of "$b")"; done | paste -sd ',')"
  # A cluster's name server list holds `;` (NAMESRV_ADDR style): quoted for the shell.
  local ns="$NAMESRV"
  [[ $ns == *";"* ]] && ns="\"$ns\""
  cat >"$RUN/env.tmp" <<EOF
ROCKETMQ_NAMESRV=$ns
ROCKETMQ_BROKER=$BROKER
ROCKETMQ_CLUSTER=$CLUSTER
ROCKETMQ_BROKER_NAME=$BROKER_NAME
ROCKETMQ_BROKERS=$brokers
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

start_one() { # name
  local name="$1" port="${PORT[$1]}" p
  if running_pid "$name" >/dev/null; then return 0; fi
  if is_namesrv "$name"; then
    port_open "$port" && die "port $port is in use by another process"
    log "starting $name on $(addr_of "$name")"
    launch "$name" "-XX:+UseG1GC -Xms64m -Xmx128m -Xss512k -XX:MaxDirectMemorySize=64m" \
      "$NAMESRV_MAIN" -c "$RUN/$name.conf"
  else
    for p in "$port" $((port - 2)) $((port + 1)); do
      port_open "$p" && die "port $p ($name listenPort $port, -2, +1) is in use by another process"
    done
    log "starting $name on $(addr_of "$name") (fast channel :$((port - 2)), HA :$((port + 1)))"
    # Two brokers of a cluster share 2 cores with the tests: smaller heaps each.
    local heap="-Xms256m -Xmx512m -XX:MaxDirectMemorySize=256m"
    [[ $MODE == cluster ]] && heap="-Xms192m -Xmx384m -XX:MaxDirectMemorySize=192m"
    launch "$name" "-XX:+UseG1GC $heap -Xss512k" \
      "$BROKER_MAIN" -c "$RUN/$name.conf" -n "$NAMESRV"
  fi
}

# A process this call just launched: alive is enough. Until its subshell execs java, its
# command line is this script's, and running_pid (which checks the main class to reject a
# reused pid) would call it gone on a loaded machine.
launched_alive() {
  local f
  f="$(pidfile "$1")"
  { [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null; } || running_pid "$1" >/dev/null
}

# what this call launched is stopped again: no half-started RocketMQ is left behind
LAUNCHED=()
start_failed() {
  local name
  for name in "${LAUNCHED[@]}"; do stop_one "$name" KILL; done
  log "start failed (logs in $LOGS; ROCKETMQ_START_TIMEOUT=$START_TIMEOUT)"; exit 1
}

# wait until the components listen, and every running name server lists each running broker
wait_ready() { # names...
  local deadline=$((SECONDS + START_TIMEOUT)) name n
  for name in "$@"; do
    while :; do
      launched_alive "$name" || { log "ERROR: $name exited during start-up"; tail_logs "$name"; start_failed; }
      port_open "${PORT[$name]}" && break
      ((SECONDS < deadline)) || { log "ERROR: $name not listening after $START_TIMEOUT s"; tail_logs "$name"; start_failed; }
      sleep 0.3
    done
  done
  # A real request: each broker must be registered in each name server that runs.
  for name in "${BROKERS[@]}"; do
    running_pid "$name" >/dev/null || continue
    for n in "${NAMESRVS[@]}"; do
      running_pid "$n" >/dev/null || port_open "${PORT[$n]}" || continue
      local left=$((deadline - SECONDS)); ((left > 5)) || left=5
      if ! TOOL_NAMESRV="$(addr_of "$n")" run_tool wait-ready --broker "$(addr_of "$name")" \
          --timeout-ms "$((left * 1000))" >/dev/null; then
        log "ERROR: $name not registered in $n after $START_TIMEOUT s"; tail_logs "$n"; tail_logs "$name"
        start_failed
      fi
    done
  done
}

# The components a start/stop argument names: all, namesrv(s), broker(s) or one by name.
components() {
  case "${1:-all}" in
    all) echo "${NAMESRVS[@]}" "${BROKERS[@]}" ;;
    namesrv | namesrvs) echo "${NAMESRVS[@]}" ;;
    broker | brokers) echo "${BROKERS[@]}" ;;
    *) known "$1" || die "unknown component '$1' (have: ${NAMESRVS[*]} ${BROKERS[*]})"; echo "$1" ;;
  esac
}

cmd_start() {
  installed || cmd_install
  local what="${1:-all}" t0=$SECONDS name all_up=1
  for name in "${NAMESRVS[@]}" "${BROKERS[@]}"; do
    { running_pid "$name" >/dev/null && port_open "${PORT[$name]}"; } || all_up=0
  done
  if ((all_up)) && [[ -f $RUN/env ]]; then
    log "already running: namesrv $NAMESRV, broker(s) $(for b in "${BROKERS[@]}"; do addr_of "$b"; done | paste -sd ' ')"; return 0
  fi
  mkdir -p "$RUN"
  if [[ $MODE == single && $what == all ]] && ! running_pid namesrv >/dev/null && port_open "$NAMESRV_PORT"; then
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
  local wanted=() started=()
  read -r -a wanted <<<"$(components "$what")"
  # Name servers first: a broker registers with those that run when it starts (and every
  # 30 s after).
  for name in "${wanted[@]}"; do is_namesrv "$name" && { start_one "$name"; started+=("$name"); }; done
  for name in "${wanted[@]}"; do
    is_namesrv "$name" && continue
    local any=0 n
    for n in "${NAMESRVS[@]}"; do running_pid "$n" >/dev/null && any=1; done
    ((any)) || die "no name server running: use 'start' first"
    start_one "$name"; started+=("$name")
  done
  wait_ready "${started[@]}"
  write_env
  log "ready in $((SECONDS - t0)) s: namesrv $NAMESRV, broker $BROKER ($CLUSTER/$BROKER_NAME); env in $RUN/env"
}

stop_one() { # name [KILL]
  local name="$1" sig="${2:-TERM}" pid i grace=30
  # The name server keeps nothing but kvConfig.json (written at each update): no need to
  # wait 10 s for its graceful Netty shutdown. The broker flushes its store: let it finish.
  is_namesrv "$name" && grace=3
  pid="$(running_pid "$name")" || { rm -f "$(pidfile "$name")"; return 0; }
  log "stopping $name (pid $pid, SIG$sig)"
  kill -"$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 5; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "$name still running after $grace s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$(pidfile "$name")"
}

cmd_stop() { # [all|namesrv|broker|NAME] [--kill]
  local what=all sig=TERM a name
  for a in "$@"; do
    case "$a" in
      --kill) sig=KILL ;;
      *) what="$a" ;;
    esac
  done
  local names=()
  read -r -a names <<<"$(components "$what")"
  # Brokers first: they unregister from the name servers on a graceful stop.
  for name in "${names[@]}"; do is_namesrv "$name" || stop_one "$name" "$sig"; done
  for name in "${names[@]}"; do is_namesrv "$name" && stop_one "$name" "$sig"; done
  return 0
}

cmd_status() {
  local rc=0 name pid
  for name in "${NAMESRVS[@]}" "${BROKERS[@]}"; do
    local addr port="${PORT[$name]}"
    addr="$(addr_of "$name")"
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
    -cp "$TOOL_DIR:$LIB/*" RmqTool "$@" -n "${TOOL_NAMESRV:-$NAMESRV}" --broker-addr "$BROKER"
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
