"""Helpers shared by every service and gateway (a library, not a service)."""
import os

from kombu import pools

from services.common.settings import setting

# kombu pools at most 10 connections and producers per process by default, and nameko sends
# every RPC request, reply and event through that pool, each waiting for its publisher
# confirm: 10 would cap a whole service at 10 messages in flight. A release burst needs more.
# Read here, from the environment, not from a container's config: kombu's limit is one for
# the whole process (every container, proxy and test in it shares the pools), so no one
# container's config owns it, and it must be set before anything takes a connection. Under
# `nameko run` the config's AMQP_POOL_LIMIT is this same variable with this same default.
pools.set_limit(setting(os.environ, "AMQP_POOL_LIMIT"))
