#!/usr/bin/env bash
# Installs what the README's two commands need and a fresh Debian machine lacks. Both
# tests/stack.sh and tests/run.sh run it first, and .ci/run calls it too, so CI checks it.
#
#   tests/setup.sh            install what is missing (as root, or through `sudo -n`)
#   tests/setup.sh --dry-run  only say what is missing and what would be installed
#
# What it checks, and the package that brings it when it is missing:
#   mosquitto_pub, mosquitto_sub   mosquitto-clients   (tests/stack.sh's device, e2e tests)
#   openssl                        openssl             (tests/stack.sh's demo certificates)
#   javac 17 or newer              openjdk-17-jdk-headless  (Apache RocketMQ for the tests)
#   mvn                            maven               (fetches RocketMQ's jars)
#   systemd-analyze                systemd             (systemd/verify.sh, tests/run.sh)
#   python3                        python3             (test clients, tests/stack.sh)
#   python3 paho-mqtt 2.x          pip: paho-mqtt==2.* (python3-pip when pip is missing)
# Rust itself is not installed here (https://rustup.rs); it is only checked.
#
# When everything is there it installs nothing and takes well under a second (no JVM or
# package manager is started: the JDK's version is read from its `release` file).
# Exit status: 0 when everything is there afterwards (or, with --dry-run, already was);
# 1 when something is missing and cannot be installed (the message names the packages).
set -euo pipefail

dry=0
case ${1:-} in
  --dry-run) dry=1 ;;
  "") ;;
  *) echo "usage: tests/setup.sh [--dry-run]" >&2; exit 2 ;;
esac
say() { echo "tests/setup.sh: $*"; }
has() { command -v "$1" >/dev/null 2>&1; }

# The major version of the JDK whose javac is on PATH, from its release file (0: unknown).
jdk_major() {
  local javac home line
  javac=$(command -v javac) || { echo 0; return; }
  javac=$(readlink -f "$javac" 2>/dev/null || echo "$javac")
  home=${javac%/bin/javac}
  if [[ -r $home/release ]]; then
    while IFS= read -r line; do
      if [[ $line =~ ^JAVA_VERSION=\"(1\.)?([0-9]+) ]]; then
        echo "${BASH_REMATCH[2]}"
        return
      fi
    done <"$home/release"
  fi
  # No release file (an unusual JDK layout): ask javac itself, which starts a JVM.
  line=$(javac -version 2>&1 || true)
  if [[ $line =~ javac\ (1\.)?([0-9]+) ]]; then echo "${BASH_REMATCH[2]}"; else echo 0; fi
}

paho_ok() {
  python3 -c 'import sys, paho.mqtt as m; sys.exit(0 if m.__version__.startswith("2.") else 1)' 2>/dev/null
}

missing=() # what is missing, for people
debs=()    # Debian packages that bring it
has mosquitto_pub && has mosquitto_sub || { missing+=(mosquitto_sub); debs+=(mosquitto-clients); }
has openssl || { missing+=(openssl); debs+=(openssl); }
if ! has javac; then
  missing+=("java 17"); debs+=(openjdk-17-jdk-headless)
elif (($(jdk_major) < 17)); then
  missing+=("java 17 (javac is $(jdk_major))"); debs+=(openjdk-17-jdk-headless)
fi
has mvn || { missing+=(mvn); debs+=(maven); }
has systemd-analyze || { missing+=(systemd-analyze); debs+=(systemd); }
pip_needed=0
if ! has python3; then
  missing+=(python3 paho-mqtt); debs+=(python3 python3-pip); pip_needed=1
elif ! paho_ok; then
  missing+=(paho-mqtt); pip_needed=1
  python3 -m pip --version >/dev/null 2>&1 || debs+=(python3-pip)
fi
has cargo || say "note: cargo is missing; install Rust from https://rustup.rs (not done here)"

if ((${#missing[@]} == 0)); then
  say "nothing to install (mosquitto-clients, openssl, java $(jdk_major), maven, systemd-analyze, python3 paho-mqtt 2.x are there)"
  exit 0
fi
say "missing: ${missing[*]}"
pip_what="paho-mqtt==2.*"
if ((dry)); then
  ((${#debs[@]})) && say "would install Debian packages: ${debs[*]}"
  ((pip_needed)) && say "would install Python package: $pip_what"
  exit 0
fi

# ------------------------------------------------------------------ Debian packages
if ((${#debs[@]})); then
  sudo=()
  if ((EUID != 0)); then
    if has sudo && sudo -n true 2>/dev/null; then sudo=(sudo -n); fi
  fi
  if ! has apt-get || { ((EUID != 0)) && ((${#sudo[@]} == 0)); }; then
    why="not root and no password-less sudo"
    has apt-get || why="no apt-get on this machine"
    then_pip=""
    ((pip_needed)) && then_pip=", then 'python3 -m pip install $pip_what'"
    say "cannot install: packages ${debs[*]} ($why); install them, e.g. 'sudo apt-get install ${debs[*]}'$then_pip" >&2
    exit 1
  fi
  say "installing Debian packages: ${debs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A stale mirror index ("File has unexpected size ... Mirror sync in progress?") makes
  # apt-get update fail and drop that source: retry once, then go on with what we have.
  "${sudo[@]}" apt-get update -q ||
    { sleep 5; "${sudo[@]}" apt-get update -q || say "apt-get update failed twice; using the lists we have" >&2; }
  if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${debs[@]}"; then
    sleep 5
    "${sudo[@]}" apt-get update -q || true
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${debs[@]}" ||
      { say "cannot install: packages ${debs[*]} (apt-get install failed twice)" >&2; exit 1; }
  fi
fi

# ------------------------------------------------------------------ Python: paho-mqtt 2.x
if ((pip_needed)) && ! paho_ok; then
  say "installing Python package: $pip_what"
  export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
  pip=(python3 -m pip install -q "$pip_what")
  ((EUID == 0)) || pip+=(--user)
  err=$("${pip[@]}" 2>&1) || {
    # Debian's Python refuses pip outside a venv (PEP 668); the tests need the module in
    # the python3 on PATH, so install it there anyway.
    if [[ $err == *externally-managed* ]]; then
      "${pip[@]}" --break-system-packages
    else
      echo "$err" >&2
      say "cannot install: Python package $pip_what (pip failed)" >&2
      exit 1
    fi
  }
  paho_ok || { say "paho-mqtt 2.x is still not importable by $(command -v python3)" >&2; exit 1; }
fi
say "done"
