"""MongoDB access as a nameko dependency: one client per service process.

Each service owns one database (DESIGN.md section 2); the dependency hands workers a small
store object wrapping that database, so service code never builds queries itself.
"""
import eventlet
import pymongo
from nameko.extensions import DependencyProvider

from services.common.pending import FLUSH_SECONDS, flush_all


def connect(uri):
    # tz_aware: datetimes come back in UTC with their zone, never as ambiguous naive values
    return pymongo.MongoClient(uri, tz_aware=True, maxPoolSize=200, serverSelectionTimeoutMS=3000)


def database_name(config, name):
    return f"{config.get('MONGO_DB_PREFIX') or ''}{name}"


class MongoStore(DependencyProvider):
    """Inject `store_cls(database)`; the store creates its indexes once at start."""

    def __init__(self, name, store_cls):
        self.name = name
        self.store_cls = store_cls
        self.client = None
        self.store = None

    def setup(self):
        config = self.container.config
        self.client = connect(config["MONGO_URI"])
        self.store = self.store_cls(self.client[database_name(config, self.name)])

    def start(self):
        self.store.ensure_indexes()
        if getattr(self.store, "pending", None):
            self.container.spawn_managed_thread(self._flush_pending)

    def _flush_pending(self):
        # the store's PendingMarks (services/common/pending.py), written a moment late
        while True:
            eventlet.sleep(FLUSH_SECONDS)
            if self.client is None:
                return  # stopped: stop() wrote the last batch
            flush_all(self.store.pending)

    def stop(self):
        if self.client is not None:
            flush_all(getattr(self.store, "pending", ()))  # what is gathered, before closing
        self.kill()

    def kill(self):
        if self.client is not None:
            self.client.close()
            self.client = None

    def get_dependency(self, worker_ctx):
        return self.store
