#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo use (redis-server for the
# cluster, openssh-server for Fabric's simulated hosts, wrk for the benchmark,
# haproxy for the front the sync drives, chromium for the dashboard's browser test,
# prometheus for the metrics test, nftables for the chaos runner's partitions, gcc
# for the optional compiled accelerator and its sanitizer test),
# only when one is missing. Needs root for apt-get; otherwise says what to install.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the dashboard's browser test
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# nft: the chaos runner's partitions and random loss between network namespaces (--netns)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
# gcc brings libasan (make test-asan); Debian's python3 needs python3-dev for Python.h.
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || missing+=(python3-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "polycorn: missing system packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# redis-server's package starts a system instance on port 6379, and haproxy's one
# on the ports of /etc/haproxy/haproxy.cfg; the project starts private servers on
# free ports and never uses those. prometheus's package starts one on :9090 the same way.
