"""The system as `make run` starts it: each service its own `nameko run` process."""
import os
import time
from collections import Counter

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from deploy import run
from tests.conftest import (ATTESTATION_KEY, CONVOCATION_KEY, FORM_SECRET, REQUEST_TOKEN_SECRET,
                            SLOT_ID_SECRET, STAFF_PASSWORD_COSTS, TOKEN_SECRET)


class System:
    def __init__(self, config, log_dir):
        self.config = config
        self.log_dir = log_dir
        self.env = dict(
            os.environ,
            AMQP_URI=config["AMQP_URI"],
            MONGO_URI=config["MONGO_URI"],
            MONGO_DB_PREFIX=config["MONGO_DB_PREFIX"],
            WEB_SERVER_ADDRESS=config["WEB_SERVER_ADDRESS"],
            BOOKING_TOKEN_SECRET=TOKEN_SECRET,
            REQUEST_TOKEN_SECRET=REQUEST_TOKEN_SECRET,
            SLOT_ID_SECRET=SLOT_ID_SECRET,
            CONVOCATION_SIGNING_KEY=CONVOCATION_KEY,
            ATTESTATION_SIGNING_KEY=ATTESTATION_KEY,
            PUBLIC_FORM_SECRET=FORM_SECRET,
            # no register runs here: its own tests check renewals against it
            REGISTER_CHECKED_PROCEDURES="none",
            VISA_CHECKED_PROCEDURES="none",
            RPC_TIMEOUT="10",
            OUTBOX_GRACE_SECONDS="2",
            MAX_WORKERS="60",
            UNCONFIRMED_PER_CLIENT=str(config.get("UNCONFIRMED_PER_CLIENT", 0)),
            UNCONFIRMED_PER_DOMAIN=str(config.get("UNCONFIRMED_PER_DOMAIN", 0)),
            UNCONFIRMED_RELEASE_SHARE=str(config.get("UNCONFIRMED_RELEASE_SHARE", 1)),
            PROCEDURE_MODE_DEFAULT=config["PROCEDURE_MODE_DEFAULT"],
            LOG_LEVEL="WARNING",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(config.get("SMTP_PORT", 1)),
            NOTIFY_RETRY_BASE_SECONDS="0.2",
            NOTIFY_RETRY_MAX_SECONDS="1",
            # the staff accounts of tests/integration/conftest.py (add_staff) are hashed so
            **{key: str(value) for key, value in STAFF_PASSWORD_COSTS.items()},
        )
        self.procs = []
        self.started = []

    def start(self, name, instances=1):
        self.started.extend([name] * instances)
        for i in range(instances):
            log_file = self.log_dir / f"{name}-{len(self.procs)}.log"
            self.procs.append(run.start_service(name, self.env, log_file))

    def wait_ready(self):
        """Until the gateway answers and every started process consumes its RPC queue."""
        port = self.config["WEB_SERVER_ADDRESS"].rsplit(":", 1)[1]
        run.wait_for_http(f"http://127.0.0.1:{port}/health", procs=self.procs)
        for name, count in Counter(self.started).items():
            if name in ("slots", "booking", "fraud", "notify"):
                self.wait_consuming(f"rpc-{name}", consumers=count)

    def wait_consuming(self, queue_prefix, timeout=30, consumers=1):
        """Until `consumers` consumers listen on the queue (one per process that serves it):
        a message sent before would not reach them all."""
        import requests
        from urllib.parse import quote, urlparse

        vhost = quote(urlparse(self.config["AMQP_URI"].split(";")[0]).path.lstrip("/"), safe="")
        # a cluster's first node (tests/e2e/test_rabbitmq_cluster.py), else the local broker
        management = self.config.get("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queues = requests.get(f"{management.split(',')[0]}/api/queues/{vhost}",
                                  auth=("guest", "guest"), timeout=5).json()
            if any(q["name"].startswith(queue_prefix) and q.get("consumers", 0) >= consumers
                   for q in queues):
                return
            time.sleep(0.2)
        raise AssertionError(f"fewer than {consumers} consumers on {queue_prefix}*\n{self.logs()}")

    def rpc(self):
        return ClusterRpcProxy(self.config, timeout=30)

    def stop(self):
        run.stop_all(self.procs)

    def logs(self):
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.log_dir.iterdir())


@pytest.fixture
def system(config, tmp_path):
    started = System(config, tmp_path)
    yield started
    started.stop()
