#!/usr/bin/env bash
# Debian packages vmtest's tests need: chromium (renders the HTML report headless),
# prometheus (/usr/bin/prometheus: the cutover gates' tests start their own server),
# redis-server (the chat-history stores' tests start their own, on a free port),
# docker.io (dockerd: scripts/docker-engine.sh starts an engine for the containers tests).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: cannot install ${need[*]} (needs root and apt-get); the tests that need them will skip with the reason" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# the packaged services are not wanted: the tests start their own (prometheus on free ports;
# redis-server on free ports; dockerd through scripts/docker-engine.sh, which leaves iptables
# and forwarding alone)
if command -v systemctl >/dev/null 2>&1; then
  [[ " ${need[*]} " == *" prometheus "* ]] && systemctl disable --now prometheus >/dev/null 2>&1 || true
  [[ " ${need[*]} " == *" redis-server "* ]] && systemctl disable --now redis-server >/dev/null 2>&1 || true
  [[ " ${need[*]} " == *" docker.io "* ]] && systemctl disable --now docker.socket docker >/dev/null 2>&1 || true
fi
