"""Helpers shared by every service and gateway (a library, not a service)."""
import os

from kombu import pools

# kombu pools at most 10 connections and producers per process by default, and nameko sends
# every RPC request, reply and event through that pool, each waiting for its publisher
# confirm: 10 would cap a whole service at 10 messages in flight. A release burst needs more.
pools.set_limit(int(os.environ.get("AMQP_POOL_LIMIT", "200")))
