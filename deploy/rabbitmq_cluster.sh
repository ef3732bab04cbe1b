#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, from Debian's rabbitmq-server, beside the
# system broker (5672/15672, left alone): each node has its own name, AMQP, distribution,
# management and Prometheus ports (free ones, picked at start), its data and logs under DIR,
# and the cluster's Erlang cookie in DIR/home (a private HOME, for the nodes and for
# rabbitmqctl). The nodes find each other by classic peer discovery, as in docker-compose.yml.
#
#   deploy/rabbitmq_cluster.sh start [DIR]     # default DIR: var/rabbitmq-cluster
#   deploy/rabbitmq_cluster.sh env [DIR]       # AMQP_URI (the three nodes, for kombu's failover)
#                                              # and RABBITMQ_MANAGEMENT_URL, to `eval` or source
#   deploy/rabbitmq_cluster.sh kill DIR N      # kill -9 node N (1-3): what the tests do to it
#   deploy/rabbitmq_cluster.sh start-node DIR N  # bring node N back (it rejoins the cluster)
#   deploy/rabbitmq_cluster.sh stop [DIR]      # stop the three nodes and remove DIR
#
# Then: `eval "$(deploy/rabbitmq_cluster.sh env)" && make run` runs the system on the cluster
# (its queues are quorum queues, replicated on the three nodes).
set -euo pipefail

SERVER=${RABBITMQ_SERVER:-/usr/lib/rabbitmq/bin/rabbitmq-server}
CTL=${RABBITMQ_CTL:-/usr/lib/rabbitmq/bin/rabbitmqctl}
NODES=3

cmd=${1:-}
dir=${2:-var/rabbitmq-cluster}

node_env() {  # the environment of node $1, from DIR/ports
  local n=$1
  # shellcheck disable=SC1091
  . "$dir/ports"
  local amqp=AMQP_$n dist=DIST_$n
  export HOME="$dir/home"
  export RABBITMQ_NODENAME="${PREFIX}-$n@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=${!amqp}
  export RABBITMQ_DIST_PORT=${!dist}
  export RABBITMQ_CONFIG_FILE="$dir/node$n/rabbitmq"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$dir/node$n/mnesia"
  export RABBITMQ_LOG_BASE="$dir/node$n/log"
  export RABBITMQ_PID_FILE="$dir/node$n/pid"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/node$n/advanced.config"
}

ctl() {  # rabbitmqctl against node $1
  local n=$1; shift
  ( node_env "$n"; "$CTL" -q -n "$RABBITMQ_NODENAME" "$@" )
}

free_ports() {  # $1 free TCP ports on 127.0.0.1 (held open together, so all distinct)
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

configure() {
  mkdir -p "$dir/home"
  dir=$(cd "$dir" && pwd)
  # the shared cookie: the nodes of one cluster, and the CLI, must present the same
  python3 -c 'import secrets; print(secrets.token_hex(20).upper(), end="")' > "$dir/home/.erlang.cookie"
  chmod 600 "$dir/home/.erlang.cookie"
  echo "[rabbitmq_management,rabbitmq_prometheus]." > "$dir/enabled_plugins"
  read -r -a ports <<< "$(free_ports $((NODES * 4)))"
  {
    echo "PREFIX=rdv$(python3 -c 'import secrets; print(secrets.token_hex(3))')"
    for n in $(seq 1 $NODES); do
      i=$(((n - 1) * 4))
      echo "AMQP_$n=${ports[$i]} DIST_$n=${ports[$((i + 1))]}"
      echo "HTTP_$n=${ports[$((i + 2))]} PROM_$n=${ports[$((i + 3))]}"
    done
  } > "$dir/ports"
  # shellcheck disable=SC1091
  . "$dir/ports"
  for n in $(seq 1 $NODES); do
    mkdir -p "$dir/node$n"
    local amqp=AMQP_$n http=HTTP_$n prom=PROM_$n
    {
      echo "listeners.tcp.default = 127.0.0.1:${!amqp}"
      echo "management.tcp.port = ${!http}"
      echo "management.tcp.ip = 127.0.0.1"
      echo "prometheus.tcp.port = ${!prom}"
      echo "prometheus.tcp.ip = 127.0.0.1"
      echo "cluster_formation.peer_discovery_backend = classic_config"
      for m in $(seq 1 $NODES); do
        echo "cluster_formation.classic_config.nodes.$m = ${PREFIX}-$m@localhost"
      done
      # a node that comes back after a crash waits this long for its peers' tables
      echo "mnesia_table_loading_retry_timeout = 10000"
      echo "mnesia_table_loading_retry_limit = 6"
      # four brokers share this machine: none should refuse publishers for memory it sees free
      echo "vm_memory_high_watermark.relative = 0.6"
    } > "$dir/node$n/rabbitmq.conf"
    echo "[]." > "$dir/node$n/advanced.config"
  done
}

start_node() {  # node $1, in the background, detached from this shell's session
  local n=$1
  mkdir -p "$dir/node$n/log"
  # (from its folder: a crashing node writes erl_crash.dump where it runs)
  ( node_env "$n"; cd "$dir/node$n"; setsid "$SERVER" >> "$dir/node$n/log/console.log" 2>&1 < /dev/null & )
}

await_node() {
  local n=$1
  # await_startup fails at once while the node is not yet reachable
  for _ in $(seq 1 240); do
    ctl "$n" ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  ctl "$n" --timeout 180 await_startup >/dev/null
}

pid_of() { cat "$dir/node$1/pid" 2>/dev/null || true; }

print_env() {
  # shellcheck disable=SC1091
  . "$dir/ports"
  local uris=() urls=()
  for n in $(seq 1 $NODES); do
    local amqp=AMQP_$n http=HTTP_$n
    uris+=("pyamqp://guest:guest@127.0.0.1:${!amqp}/")
    urls+=("http://127.0.0.1:${!http}")
  done
  # kombu takes ';'-separated alternates and fails over between them
  echo "export AMQP_URI='$(IFS=';'; echo "${uris[*]}")'"
  echo "export RABBITMQ_MANAGEMENT_URL='$(IFS=','; echo "${urls[*]}")'"
}

case "$cmd" in
  start)
    if [ -f "$dir/ports" ]; then echo "$dir already holds a cluster (stop it first)" >&2; exit 2; fi
    configure
    # the first node alone, then the two others, which find it and join it
    start_node 1
    await_node 1
    start_node 2
    start_node 3
    await_node 2
    await_node 3
    for _ in $(seq 1 120); do
      running=$(ctl 1 cluster_status --formatter json |
                python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')
      [ "$running" = "$NODES" ] && break
      sleep 0.5
    done
    if [ "$running" != "$NODES" ]; then echo "only $running nodes joined" >&2; exit 1; fi
    # the project's exchanges, dead-letter queues and policies, as deploy/ensure_rabbitmq.sh
    # loads them into the single broker
    curl -fsS -u guest:guest -H 'Content-Type: application/json' -X POST \
      --data @"$(dirname "$0")/rabbitmq/definitions.json" "http://127.0.0.1:$HTTP_1/api/definitions"
    print_env
    ;;
  env)
    print_env
    ;;
  kill)
    n=${3:?node number}
    pid=$(pid_of "$n")
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    ;;
  start-node)
    n=${3:?node number}
    start_node "$n"
    await_node "$n"
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    dir=$(cd "$dir" && pwd)
    for n in $(seq 1 $NODES); do
      pid=$(pid_of "$n")
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        timeout 20 "$0" _ctl "$dir" "$n" stop >/dev/null 2>&1 || true
        kill -9 "$pid" 2>/dev/null || true
      fi
    done
    rm -rf "$dir"
    ;;
  _ctl)
    n=$3; shift 3
    ctl "$n" "$@"
    ;;
  *)
    sed -n '2,15p' "$0" >&2
    exit 2
    ;;
esac
