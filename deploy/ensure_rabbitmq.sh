#!/usr/bin/env bash
# Make sure the local RabbitMQ answers on AMQP (5672) and on its management API (15672):
# the services need the first, the tests make a vhost per test through the second. Enables the
# Prometheus plugin (metrics on 15692) and loads the project's definitions (exchanges,
# dead-letter exchange and queues, policies: deploy/rabbitmq/definitions.json) into "/".
# Idempotent: does nothing when both are already up. Skipped when AMQP_URI points elsewhere.
set -euo pipefail

case "${AMQP_URI:-}" in
  ""|*localhost*|*127.0.0.1*) ;;
  *) echo "AMQP_URI is not local; not managing RabbitMQ"; exit 0 ;;
esac

if ! command -v rabbitmqctl >/dev/null 2>&1; then
  echo "RabbitMQ is not installed; installing Debian's rabbitmq-server"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
fi

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  echo "RabbitMQ is down; starting it"
  rabbitmq-server -detached
fi
rabbitmqctl -q --timeout 120 await_startup >/dev/null

for plugin in rabbitmq_management rabbitmq_prometheus; do
  if ! rabbitmq-plugins -q list -e -m 2>/dev/null | grep -qx "$plugin"; then
    echo "enabling RabbitMQ's $plugin plugin"
    rabbitmq-plugins -q enable "$plugin" >/dev/null
  fi
done

for _ in $(seq 1 120); do
  if curl -fs -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; then
    # through the management API, as docker-compose does (rabbitmqctl reads the file as the
    # broker's user, who may not see this folder); additive and idempotent
    curl -fsS -u guest:guest -H 'Content-Type: application/json' -X POST \
      --data @"$(dirname "$0")/rabbitmq/definitions.json" http://127.0.0.1:15672/api/definitions
    exit 0
  fi
  sleep 0.5
done
echo "RabbitMQ management API did not answer on 15672" >&2
exit 1
