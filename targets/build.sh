#!/usr/bin/env bash
# ARM builds of edge-agent on a Debian 12 machine without Docker (see targets/README.md).
#
# Debian's rustc-web (bookworm-security) ships the standard library for aarch64 and armv7 as
# multiarch packages; gcc cross linkers link, qemu-user-static runs the binaries and tests
# (binfmt_misc is not assumed: qemu is cargo's `runner`, see targets/cargo-config.toml).
#
#   targets/build.sh install          install the cross toolchain once per machine (root)
#   targets/build.sh build [TARGET..] release build of edge-agent (default: both targets)
#   targets/build.sh test             agent unit tests for aarch64 under qemu
#   targets/build.sh smoke [TARGET]   the agent under qemu (default aarch64): start, QoS 1 publish,
#                                     journal, SIGTERM
#   targets/build.sh deb [TARGET..]   .deb packages of edge-agent and cloud-bridge (cargo-deb) into
#                                     target/deb/ (default: arm64, armhf and amd64)
#   targets/build.sh sizes            stripped sizes and the newest glibc symbol each binary needs
#   targets/build.sh all              install, build, test, smoke, deb, sizes
#
# TARGETs: aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu (deb only)
# (aliases: aarch64/arm64, armv7/armhf, x86_64/amd64). Cross builds go to target/cross/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export DEBIAN_FRONTEND=noninteractive

TOOLCHAIN=debian-web # `rustup toolchain link debian-web /usr` (Debian's rustc-web)
CARGO_CONFIG=(--config "$ROOT/targets/cargo-config.toml")
# Own target dir: host build scripts compiled by rustc-web must not overwrite (and then
# rebuild) the native builds' artifacts in target/.
export CARGO_TARGET_DIR=${EDGE_CROSS_TARGET_DIR:-$ROOT/target/cross}
# Fat LTO for the gateway binaries: armv7 edge-agent 5.71 MB instead of 6.03 MB with the
# workspace's thin LTO (goal: <= 6 MB on the SD card); only the final link is slower.
export CARGO_PROFILE_RELEASE_LTO=${CARGO_PROFILE_RELEASE_LTO:-fat}
ALL_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
# Debian architecture of each Rust target (std package and cross gcc).
declare -A DEB_ARCH=([aarch64-unknown-linux-gnu]=arm64 [armv7-unknown-linux-gnueabihf]=armhf [x86_64-unknown-linux-gnu]=amd64)
declare -A QEMU=([aarch64-unknown-linux-gnu]="qemu-aarch64-static -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib"
  [armv7-unknown-linux-gnueabihf]="qemu-arm-static -L /usr/arm-linux-gnueabihf -E LD_LIBRARY_PATH=/usr/arm-linux-gnueabihf/lib")
CROSS_PKGS=(rustc-web gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
  binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf qemu-user-static)
CACHE=${EDGE_CROSS_CACHE:-/var/cache/edge-agent-cross}

# Cargo with Debian's rustc. rustup's `cargo +debian-web` works only where a toolchain it
# can borrow cargo from (nightly) is installed, as rustc-web ships no cargo; rustup's default
# cargo with RUSTC set works everywhere.
xcargo() { RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc cargo "$@"; }

say() { echo "=== targets/build.sh: $* ($(date -u +%T))" >&2; }
die() {
  echo "targets/build.sh: $*" >&2
  exit 1
}

target_of() {
  case $1 in
  aarch64 | arm64 | aarch64-unknown-linux-gnu) echo aarch64-unknown-linux-gnu ;;
  armv7 | armhf | armv7-unknown-linux-gnueabihf) echo armv7-unknown-linux-gnueabihf ;;
  amd64 | x86_64 | x86_64-unknown-linux-gnu) echo x86_64-unknown-linux-gnu ;;
  *) die "unknown target '$1' (aarch64, armv7)" ;;
  esac
}

apt_update() {
  # A stale mirror index ("File has unexpected size ... Mirror sync in progress?") makes apt
  # drop that whole source: retry once, then go on with the lists we have.
  apt-get update -q || { sleep 5; apt-get update -q || echo "WARNING: apt-get update failed twice, using the lists we have" >&2; }
}

# The std package version must equal rustc-web's: both come from the same source package.
rustc_web_version() { dpkg-query -W -f='${Version}' rustc-web 2>/dev/null || true; }

# Fetch libstd-rust-web-dev:<arch> of exactly version $2 into the cache and print its path.
# First through apt (signed index; needs the foreign architecture's lists), else by file name
# from the pool directory that the amd64 index names (when the foreign index is stale/missing).
fetch_std_deb() {
  local arch=$1 ver=$2 dir="$CACHE/debs" f
  mkdir -p "$dir"
  f=$(find "$dir" -name "libstd-rust-web-dev_*_${arch}.deb" | head -n1)
  if [[ -n $f ]] && dpkg-deb -f "$f" Version | grep -qxF "$ver"; then
    echo "$f"
    return
  fi
  rm -f "$dir"/libstd-rust-web-dev_*_"${arch}".deb
  if (cd "$dir" && apt-get download -q "libstd-rust-web-dev:${arch}=${ver}") >&2; then
    find "$dir" -name "libstd-rust-web-dev_*_${arch}.deb" | head -n1
    return
  fi
  echo "WARNING: apt-get download libstd-rust-web-dev:${arch} failed; fetching it by file name" >&2
  local pool mirror url
  pool=$(apt-cache show "libstd-rust-web-dev=${ver}" 2>/dev/null | sed -n 's/^Filename: //p' | grep '_amd64\.deb$' | head -n1)
  [[ -n $pool ]] || die "libstd-rust-web-dev=${ver} is in no apt list (run apt-get update)"
  pool=${pool%_amd64.deb}_${arch}.deb
  for mirror in $(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2>/dev/null | sort -u) \
    http://deb.debian.org/debian-security/; do
    url="${mirror%/}/${pool}"
    if curl -fsSL --retry 3 -o "$dir/${pool##*/}.part" "$url" 2>/dev/null &&
      dpkg-deb -f "$dir/${pool##*/}.part" Package Version Architecture >/dev/null 2>&1 &&
      dpkg-deb -f "$dir/${pool##*/}.part" Version | grep -qxF "$ver"; then
      mv "$dir/${pool##*/}.part" "$dir/${pool##*/}"
      echo "$dir/${pool##*/}"
      return
    fi
    rm -f "$dir/${pool##*/}.part"
  done
  die "could not fetch libstd-rust-web-dev:${arch} ${ver}"
}

cmd_install() {
  [[ $(id -u) == 0 ]] || die "install needs root (apt-get, /usr/lib/rustlib)"
  local missing=() p
  for p in "${CROSS_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  # rustc-web must be the bookworm-security one (1.96): the bookworm 1.85 one is too old for
  # the workspace's rust-version.
  local updated=0
  if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    apt_update
    updated=1
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
      sleep 5
      apt_update
      apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
  fi
  local ver
  ver=$(rustc_web_version)
  [[ -n $ver ]] || die "rustc-web is not installed"
  # Foreign architectures only for the download of the std packages (never installed: that
  # would pull libc6:arm64 and mix two glibc builds under qemu, see cross-arm.md).
  local t arch lib have
  for t in "${ALL_TARGETS[@]}"; do
    arch=${DEB_ARCH[$t]}
    lib=/usr/lib/rustlib/$t/lib
    have=$(cat "/usr/lib/rustlib/$t/.edge-agent-std-version" 2>/dev/null || true)
    if [[ $have == "$ver" ]] && compgen -G "$lib/libstd-*.rlib" >/dev/null; then
      continue
    fi
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
      dpkg --add-architecture "$arch"
      updated=0
    fi
    if ((!updated)); then
      apt_update
      updated=1
    fi
    say "std for $t (libstd-rust-web-dev:$arch $ver)"
    local deb x
    deb=$(fetch_std_deb "$arch" "$ver")
    x=$(mktemp -d)
    dpkg-deb -x "$deb" "$x"
    [[ -d $x/usr/lib/rustlib/$t/lib ]] || die "$deb has no usr/lib/rustlib/$t"
    rm -rf "/usr/lib/rustlib/$t"
    mkdir -p /usr/lib/rustlib
    cp -a "$x/usr/lib/rustlib/$t" /usr/lib/rustlib/
    echo "$ver" >"/usr/lib/rustlib/$t/.edge-agent-std-version"
    rm -rf "$x"
  done
  if ! rustup toolchain list | grep -q "^$TOOLCHAIN"; then
    say "rustup toolchain link $TOOLCHAIN /usr"
    rustup toolchain link "$TOOLCHAIN" /usr
  fi
  rustc +"$TOOLCHAIN" --version
  say "cross toolchain ready"
}

cmd_build() {
  local targets=("$@") t
  ((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")
  for t in "${targets[@]}"; do
    t=$(target_of "$t")
    say "cargo build --release --target $t -p edge-agent"
    xcargo build "${CARGO_CONFIG[@]}" --release --target "$t" -p edge-agent
    ls -l "$CARGO_TARGET_DIR/$t/release/edge-agent"
  done
}

cmd_test() {
  local t=aarch64-unknown-linux-gnu
  say "cargo test --target $t -p edge-agent --lib (under qemu)"
  xcargo test "${CARGO_CONFIG[@]}" --target "$t" -p edge-agent --lib
}

# A free loopback TCP port (the kernel picks it; tiny race until the agent binds it).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The release agent (default aarch64) under qemu on loopback, with a temp state dir: waits until the
# listener accepts (prints the start-up time), publishes one QoS 1 message, finds it with
# `edge-agent journal peek` (under qemu too), stops it with SIGTERM and wants exit code 0.
cmd_smoke() {
  local t
  t=$(target_of "${1:-aarch64}")
  local bin=$CARGO_TARGET_DIR/$t/release/edge-agent
  # Always through cargo: a binary left from an older tree would test old code.
  cmd_build "$t"
  command -v mosquitto_pub >/dev/null || die "smoke needs mosquitto_pub (apt-get install mosquitto-clients)"
  local -a qemu
  read -r -a qemu <<<"${QEMU[$t]}"
  local dir port pid rc i t0 t1 topic payload
  dir=$(mktemp -d /tmp/edge-agent-smoke.XXXXXX)
  port=$(free_port)
  # The default config with the MQTT listener on $port and any other listener on port 0.
  sed -e "/^bind = \"127.0.0.1:1883\"/!s/^bind = \"\\([0-9.]*\\):[0-9]*\"/bind = \"\\1:0\"/" \
    -e "s/^bind = \"127.0.0.1:1883\"/bind = \"127.0.0.1:${port}\"/" \
    conf/edge-agent.toml >"$dir/edge-agent.toml"
  grep -q "127.0.0.1:${port}" "$dir/edge-agent.toml" || die "smoke: no 127.0.0.1:1883 listener in conf/edge-agent.toml to move"
  say "smoke: ${bin#"$ROOT"/} under ${qemu[0]} on 127.0.0.1:$port, state in $dir"
  t0=$(date +%s%N)
  RUST_LOG=info "${qemu[@]}" "$bin" run --config "$dir/edge-agent.toml" --state-dir "$dir/state" 2>"$dir/agent.log" &
  pid=$!
  # shellcheck disable=SC2064
  trap "kill -KILL $pid 2>/dev/null || true" EXIT
  for ((i = 0; i < 3000; i++)); do # 60 s at most
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$dir/agent.log" >&2; die "smoke: the agent exited during start-up"; }
    sleep 0.02
  done
  t1=$(date +%s%N)
  ((i < 3000)) || { cat "$dir/agent.log" >&2; die "smoke: the listener did not accept within 60 s"; }
  echo "smoke: start-up under qemu (spawn to listener accepting): $(((t1 - t0) / 1000000)) ms"
  topic="smoke/$t/$$"
  payload="smoke-$(date +%s%N)"
  mosquitto_pub -h 127.0.0.1 -p "$port" -V mqttv311 -i "smoke-$$" -q 1 -t "$topic" -m "$payload" ||
    { cat "$dir/agent.log" >&2; die "smoke: QoS 1 publish failed"; }
  "${qemu[@]}" "$bin" journal --file "$dir/state/journal.db" peek --limit 10 >"$dir/peek.txt" ||
    { cat "$dir/peek.txt" "$dir/agent.log" >&2; die "smoke: journal peek failed"; }
  grep -qF "$topic" "$dir/peek.txt" || { cat "$dir/peek.txt" >&2; die "smoke: $topic is not in the journal"; }
  echo "smoke: journal peek shows the publish: $(grep -F "$topic" "$dir/peek.txt" | head -n1)"
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  trap - EXIT
  if ((rc != 0)); then
    cat "$dir/agent.log" >&2
    die "smoke: SIGTERM exit code $rc, wanted 0"
  fi
  grep -q "edge-agent stopped" "$dir/agent.log" || { cat "$dir/agent.log" >&2; die "smoke: no 'edge-agent stopped' in the log"; }
  echo "smoke: SIGTERM -> exit 0, journal closed"
  rm -rf "$dir"
}

# .deb packages of edge-agent and cloud-bridge (cargo-deb, metadata in each Cargo.toml,
# maintainer scripts in systemd/deb/, units in systemd/) into target/deb/.
CARGO_DEB_VERSION=3.8.0
cmd_deb() {
  local targets=("$@") t p
  ((${#targets[@]})) || targets=("${ALL_TARGETS[@]}" x86_64-unknown-linux-gnu)
  if ! command -v cargo-deb >/dev/null; then
    say "cargo install cargo-deb --locked --version $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
  fi
  mkdir -p "$ROOT/target/deb"
  for t in "${targets[@]}"; do
    t=$(target_of "$t")
    say "cargo build --release --target $t -p edge-agent -p cloud-bridge"
    if [[ $t == x86_64-unknown-linux-gnu ]]; then
      cargo build --release --target "$t" -p edge-agent -p cloud-bridge
    else
      xcargo build "${CARGO_CONFIG[@]}" --release --target "$t" -p edge-agent -p cloud-bridge
    fi
    for p in edge-agent cloud-bridge; do
      # The release profile strips already; cargo-deb's own strip would need the cross strip.
      cargo deb --no-build --no-strip --target "$t" -p "$p" --output "$ROOT/target/deb/"
    done
  done
  ls -l "$ROOT/target/deb/"
}

# Stripped size and the newest glibc symbol version of every binary built here.
cmd_sizes() {
  local t f objdump
  for t in "${ALL_TARGETS[@]}" x86_64-unknown-linux-gnu; do
    case $t in
    aarch64-*) objdump=aarch64-linux-gnu-objdump ;;
    armv7-*) objdump=arm-linux-gnueabihf-objdump ;;
    *) objdump=objdump ;;
    esac
    for f in "$CARGO_TARGET_DIR/$t/release/edge-agent" "$CARGO_TARGET_DIR/$t/release/cloud-bridge"; do
      [[ -f $f ]] || continue
      printf '%-32s %-13s %6.2f MB  needs %s\n' "$t" "${f##*/}" "$(awk -v b="$(stat -c %s "$f")" 'BEGIN { print b / 1e6 }')" \
        "$("$objdump" -T "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)"
    done
  done
}

case ${1:-} in
install) cmd_install ;;
build)
  shift
  cmd_build "$@"
  ;;
test) cmd_test ;;
smoke)
  shift
  cmd_smoke "$@"
  ;;
deb)
  shift
  cmd_deb "$@"
  ;;
sizes) cmd_sizes ;;
all)
  cmd_install
  cmd_build
  cmd_test
  cmd_smoke
  cmd_deb
  cmd_sizes
  ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 2
  ;;
esac
