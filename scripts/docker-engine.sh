#!/usr/bin/env bash
# A Docker engine for the tests' containers provider, started for a run and stopped after it.
#
#   scripts/docker-engine.sh start   prints DOCKER_HOST=... on stdout (nothing when no engine
#                                    can run here: the containers tests then skip with the reason)
#   scripts/docker-engine.sh stop    removes what vmtest left, stops the engine, checks that
#                                    the machine's network settings are as they were (exit 1 if not)
#
# An engine that already answers (DOCKER_HOST, /var/run/docker.sock) is used as it is, never
# stopped. Otherwise dockerd (Debian's docker.io) runs as root with --iptables=false and
# --ip-forward=false, so it leaves iptables and net.ipv4.ip_forward alone; published ports go
# through docker-proxy on 127.0.0.1. The only change it makes is the docker0 bridge, which
# `stop` deletes. Images live in /var/lib/vmtest-docker, kept between runs on one machine.
set -euo pipefail

RUN=/run/vmtest-docker
DATA=${VMTEST_DOCKER_DATA:-/var/lib/vmtest-docker}
SOCK=unix://$RUN/docker.sock

say() { echo "docker-engine: $*" >&2; }

network_state() {
  # what dockerd may change: forwarding, packet filter rules, links, routes
  echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo ?)"
  if command -v iptables-save >/dev/null 2>&1; then
    iptables-save 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//' || true
  fi
  ip -o link show 2>/dev/null | awk -F': ' '{print "link " $2}' | sed 's/@.*//' | sort || true
  ip route show 2>/dev/null | sed 's/^/route /' | sort || true
}

answers() { DOCKER_HOST=$1 timeout 10 docker version >/dev/null 2>&1; }

start() {
  if [ -n "${DOCKER_HOST:-}" ] && answers "$DOCKER_HOST"; then
    say "using the engine at $DOCKER_HOST"; echo "DOCKER_HOST=$DOCKER_HOST"; return
  fi
  if [ -S /var/run/docker.sock ] && answers unix:///var/run/docker.sock; then
    say "using the engine at /var/run/docker.sock"; echo "DOCKER_HOST=unix:///var/run/docker.sock"; return
  fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    say "dockerd or docker is not installed (Debian: docker.io); containers tests will skip"; return
  fi
  if [ "$(id -u)" != 0 ]; then
    say "dockerd needs root; containers tests will skip"; return
  fi
  if [ -f $RUN/dockerd.pid ] && kill -0 "$(cat $RUN/dockerd.pid)" 2>/dev/null; then
    say "an engine of an earlier run is still up: stopping it first"; stop || true
  fi
  mkdir -p $RUN "$DATA"
  network_state > $RUN/network.before
  ip link show docker0 >/dev/null 2>&1 && touch $RUN/docker0.existed || rm -f $RUN/docker0.existed
  setsid dockerd --host "$SOCK" --data-root "$DATA" --exec-root $RUN/exec \
    --pidfile $RUN/dockerd.pid --iptables=false --ip-forward=false --ip-masq=false \
    >$RUN/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    if answers "$SOCK"; then
      say "started dockerd ($(DOCKER_HOST=$SOCK docker version --format '{{.Server.Version}}'), images in $DATA)"
      echo "DOCKER_HOST=$SOCK"; return
    fi
    sleep 0.5
  done
  say "dockerd did not answer in 30 s; containers tests will skip. Its log:"
  tail -5 $RUN/dockerd.log >&2 || true
  stop >/dev/null 2>&1 || true
}

stop() {
  [ -f $RUN/dockerd.pid ] || { say "no engine of ours is running"; return 0; }
  local status=0 pid left
  pid=$(cat $RUN/dockerd.pid)
  if answers "$SOCK"; then
    left=$(DOCKER_HOST=$SOCK docker ps -aq --filter label=org.vmtest.owner)
    if [ -n "$left" ]; then
      say "left behind: $(echo "$left" | wc -l) container(s) of vmtest; removing them"
      DOCKER_HOST=$SOCK docker rm -f $left >/dev/null || true
      status=1
    fi
    left=$(DOCKER_HOST=$SOCK docker network ls -q --filter type=custom)
    if [ -n "$left" ]; then
      say "left behind: network(s) $(echo $left); removing them"
      DOCKER_HOST=$SOCK docker network rm $left >/dev/null || true
      status=1
    fi
  fi
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f $RUN/dockerd.pid
  if [ ! -e $RUN/docker0.existed ] && ip link show docker0 >/dev/null 2>&1; then
    ip link delete docker0
  fi
  if [ -f $RUN/network.before ]; then
    if ! diff <(cat $RUN/network.before) <(network_state) >$RUN/network.diff; then
      say "the machine's network settings changed while the engine ran:"
      cat $RUN/network.diff >&2
      status=1
    else
      say "stopped; network settings as they were"
    fi
  fi
  return $status
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
