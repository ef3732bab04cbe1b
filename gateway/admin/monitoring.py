"""The bus as supervisors watch it: queues per service from RabbitMQ's management HTTP API,
with alarms, beside the services' own health and domain figures.

Rules are plain functions (tests call them directly): which service a queue belongs to, the
view of one queue, whether a depth keeps growing, the alarms. `BusMonitor` is the dependency
that asks the management API (short timeouts: an unreachable API makes the page say so and
nothing else waits on it) and keeps a short in-process history of depths per queue, which
the "depth keeps growing" alarm reads. Each staff gateway process keeps its own history.
"""
import time
from collections import deque
from urllib.parse import quote, unquote, urlparse

import requests
from nameko.extensions import DependencyProvider

from services.common.settings import setting

DEAD_LETTER_PREFIX = "dead-letters"
HISTORY_SECONDS_MARGIN = 2.0  # samples kept a little beyond the growth window
MAX_SAMPLES = 500  # per queue, whatever the window
COLUMNS = ("name,messages,messages_ready,messages_unacknowledged,consumers,state,policy,"
           "message_stats.publish_details.rate,message_stats.deliver_get_details.rate,"
           "message_stats.publish,arguments")

NODE_COLUMNS = "name,running,mem_alarm,disk_free_alarm,partitions"

NO_CONSUMER, GROWING, DEAD_LETTERS = "no_consumer", "growing", "dead_letters"
NODE_DOWN, NODE_ALARM = "node_down", "node_alarm"


def vhost_of(amqp_uri):
    """The vhost an AMQP URI names ("/" when its path is empty): the one the management API
    is asked about; the first of a cluster's ';'-separated alternates, which share it)."""
    path = urlparse(amqp_uri.split(";", 1)[0]).path
    return "/" if path in ("", "/") else unquote(path[1:])


def service_of(queue):
    """The service a queue belongs to: rpc-<service>, evt-<source>-<event>--<service>.<method>
    (nameko's names); the dead-letter queues are the bus's; reply queues, 'replies'."""
    if queue.startswith("rpc-"):
        return queue[4:]
    if queue.startswith("evt-") and "--" in queue:
        return queue.split("--", 1)[1].split(".", 1)[0]
    if queue.startswith(DEAD_LETTER_PREFIX):
        return "bus"
    if queue.startswith("rpc.reply-"):
        return "replies"
    return "other"


def watched(queue):
    """Queues a service must consume: its RPC queue and its event handlers' queues."""
    return queue.startswith("rpc-") or queue.startswith("evt-")


def queue_view(raw):
    stats = raw.get("message_stats") or {}
    return {
        "name": raw["name"],
        "service": service_of(raw["name"]),
        "depth": raw.get("messages") or 0,
        "ready": raw.get("messages_ready") or 0,
        "unacked": raw.get("messages_unacknowledged") or 0,
        "consumers": raw.get("consumers") or 0,
        "publish_rate": round((stats.get("publish_details") or {}).get("rate") or 0.0, 2),
        "deliver_rate": round((stats.get("deliver_get_details") or {}).get("rate") or 0.0, 2),
        "policy": raw.get("policy") or None,  # the definitions file's, e.g. dead-lettering
    }


def growing(samples, window, now):
    """True when the depth rose over the last `window` seconds without ever falling: samples
    [(ts, depth)] cover the whole window, each at least the one before, the last above the first."""
    recent = [(ts, d) for ts, d in samples if ts >= now - window]
    older = [(ts, d) for ts, d in samples if ts < now - window]
    if not older or not recent:
        return False  # not watched for the whole window yet
    series = [older[-1]] + recent
    return (all(b[1] >= a[1] for a, b in zip(series, series[1:]))
            and series[-1][1] > series[0][1])


def alarms(queues, history, window, now):
    """[{kind, queue, service, message}] for the views of the queues."""
    found = []
    for q in queues:
        if watched(q["name"]) and q["consumers"] == 0:
            found.append({"kind": NO_CONSUMER, "queue": q["name"], "service": q["service"],
                          "message": f"Aucun consommateur : {q['service']} est arrêté ? / "
                                     f"No consumer: is {q['service']} down?"})
        if q["name"].startswith(DEAD_LETTER_PREFIX) and q["depth"] > 0:
            found.append({"kind": DEAD_LETTERS, "queue": q["name"], "service": q["service"],
                          "message": f"{q['depth']} message(s) en lettre morte / dead-lettered"})
        if growing(history.get(q["name"], ()), window, now):
            found.append({"kind": GROWING, "queue": q["name"], "service": q["service"],
                          "message": f"File en hausse depuis {int(window)} s / depth growing "
                                     f"for {int(window)} s"})
    return found


def node_view(raw):
    return {"name": raw["name"], "running": bool(raw.get("running")),
            "mem_alarm": bool(raw.get("mem_alarm")),
            "disk_free_alarm": bool(raw.get("disk_free_alarm")),
            "partitions": list(raw.get("partitions") or [])}


def node_alarms(nodes):
    """A cluster node that is down (its quorum queues run on the others, with one replica
    less: a second loss would stop them), or one that blocks publishers or is partitioned."""
    found = []
    for n in nodes:
        if not n["running"]:
            found.append({"kind": NODE_DOWN, "queue": n["name"], "service": "bus",
                          "message": f"Nœud RabbitMQ arrêté : {n['name']} / RabbitMQ node down"})
        elif n["mem_alarm"] or n["disk_free_alarm"] or n["partitions"]:
            found.append({"kind": NODE_ALARM, "queue": n["name"], "service": "bus",
                          "message": f"Nœud {n['name']} en alarme (mémoire, disque ou partition) "
                                     f"/ node alarm (memory, disk or partition)"})
    return found


def by_service(queues):
    grouped = {}
    for q in sorted(queues, key=lambda q: q["name"]):
        grouped.setdefault(q["service"], []).append(q)
    return grouped


class BusMonitor(DependencyProvider):
    """Reads the management API for this service's vhost; keeps each queue's recent depths."""

    def setup(self):
        config = self.container.config
        # a cluster lists every node's API (comma-separated): any running node answers for
        # the whole cluster, and one that died is the thing to report, not a blind spot
        self.urls = [u.strip().rstrip("/")
                     for u in setting(config, "RABBITMQ_MANAGEMENT_URL").split(",") if u.strip()]
        self.auth = (setting(config, "RABBITMQ_MANAGEMENT_USER"),
                     setting(config, "RABBITMQ_MANAGEMENT_PASSWORD"))
        self.timeout = setting(config, "MONITOR_HTTP_TIMEOUT")
        self.window = setting(config, "MONITOR_GROWTH_SECONDS")
        self.vhost = vhost_of(config["AMQP_URI"])
        self.history = {}

    def get_dependency(self, worker_ctx):
        return self

    def snapshot(self, now=None):
        """{"reachable", "error", "queues", "services", "alarms", "vhost"}."""
        now = time.time() if now is None else now
        try:
            raw = self._get(f"/api/queues/{quote(self.vhost, safe='')}", COLUMNS)
            nodes = [node_view(n) for n in self._get("/api/nodes", NODE_COLUMNS)]
        except (requests.RequestException, ValueError) as exc:
            return {"reachable": False, "vhost": self.vhost, "queues": [], "services": {},
                    "nodes": [], "alarms": [], "error": f"RabbitMQ management API unreachable "
                                                      f"({type(exc).__name__}) / injoignable"}
        queues = [queue_view(q) for q in raw if not q["name"].startswith("rpc.reply-")]
        self.record(queues, now)
        return {"reachable": True, "vhost": self.vhost, "queues": queues,
                "services": by_service(queues), "nodes": nodes, "error": None,
                "alarms": node_alarms(nodes) + alarms(queues, self.history, self.window, now)}

    def _get(self, path, columns):
        """The first node's answer that comes (the one answering last is tried first next)."""
        failure = None
        for url in list(self.urls):
            try:
                answer = requests.get(f"{url}{path}", params={"columns": columns},
                                      auth=self.auth, timeout=self.timeout)
                answer.raise_for_status()
                body = answer.json()
            except (requests.RequestException, ValueError) as exc:
                failure = exc
                continue
            if url != self.urls[0]:
                self.urls.remove(url)
                self.urls.insert(0, url)
            return body
        raise failure

    def record(self, queues, now):
        keep_after = now - self.window - HISTORY_SECONDS_MARGIN - 60
        names = set()
        for q in queues:
            names.add(q["name"])
            samples = self.history.setdefault(q["name"], deque(maxlen=MAX_SAMPLES))
            samples.append((now, q["depth"]))
            while len(samples) > 2 and samples[1][0] < keep_after:
                samples.popleft()  # the oldest beyond the window, one kept as its start
        for gone in set(self.history) - names:
            del self.history[gone]
