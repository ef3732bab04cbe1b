"""/ready and the services' health, as the gateways ask for it.

A gateway is ready when the broker carries its calls and every service it calls answers its
`health` RPC (services/common/health.py) with its store reachable. The calls go out at once,
each bounded by HEALTH_RPC_TIMEOUT, so a dead service costs one timeout, not one per service.
"""
import eventlet

NOT_READY = "Some services this gateway needs do not answer. / Des services ne répondent pas."


def gather(proxies):
    """{service: health report} from {service: BoundedRpcProxy}; a service that does not
    answer gets {"service", "status": "unreachable"}."""
    def ask(item):
        name, proxy = item
        try:
            return name, proxy.health()
        except Exception:  # unavailable, unknown method, anything: not ready
            return name, {"service": name, "status": "unreachable", "store": "unknown",
                          "backlog": {}}
    pool = eventlet.GreenPool(max(1, len(proxies)))
    return dict(pool.imap(ask, proxies.items()))


def ready_answer(reports):
    """(status, body) of /ready."""
    services = {name: {"status": r.get("status"), "store": r.get("store")}
                for name, r in reports.items()}
    if all(r.get("status") == "ok" for r in reports.values()):
        return 200, {"status": "ready", "services": services}
    return 503, {"error": "not_ready", "message": NOT_READY, "fields": {}, "services": services}
