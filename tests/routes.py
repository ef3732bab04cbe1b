"""A gateway's HTTP route answered in the test's process, without a server, a bus or a database.

For input checks that only a gateway's own validation decides: the route method runs on a
nameko `worker_factory` instance (every dependency a mock, so every RPC it would make is
recorded), and its result or exception becomes the response the route's own entrypoint would
send (status, `error`, `fields`). A test can then say both "400 naming this field" and "no
service was asked anything", without starting the stack for each case. At least one HTTP test
per route still shows the same answer reaching a client through the real server.
"""
import json

from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from nameko.testing.services import worker_factory
from nameko.web.handlers import HttpRequestHandler
from werkzeug.routing import Map, Rule
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request


class Answer:
    def __init__(self, response, worker, proxies):
        self.status_code = response.status_code
        self.body = json.loads(response.get_data(as_text=True))
        self.worker = worker
        self.proxies = proxies

    def json(self):
        return self.body

    def rpc_calls(self):
        """Every call made on the worker's RPC proxies: [] when no service was asked anything."""
        return [(name, call) for name in self.proxies
                for call in getattr(self.worker, name).mock_calls]


def _routes(service_cls):
    rules = []
    for name in dir(service_cls):
        for entrypoint in getattr(getattr(service_cls, name), ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(entrypoint, HttpRequestHandler):
                rules.append(Rule(entrypoint.url, methods=[entrypoint.method],
                                  endpoint=(name, entrypoint)))
    return Map(rules).bind("gateway.test")


def route_of(service_cls, method, path):
    """The name of the route method that answers (method, path)."""
    (name, _), _ = _routes(service_cls).match(path.split("?")[0], method)
    return name


def answer(service_cls, method, path, body=None, staff=None):
    """The response of `service_cls`'s route for (method, path) with a JSON `body`; with `staff`,
    the caller is already authenticated as that staff record (the API's bearer check passed)."""
    worker = worker_factory(service_cls)
    if staff is not None:
        worker._api_staff = lambda request, role, **kwargs: staff
    proxies = [name for name in dir(service_cls)
               if type(getattr(service_cls, name, None)).__name__.endswith("RpcProxy")]
    environ = EnvironBuilder(path=path, method=method,
                             json=body if body is not None else None).get_environ()
    (name, entrypoint), arguments = _routes(service_cls).match(environ["PATH_INFO"], method)
    request = Request(environ)
    try:
        response = entrypoint.response_from_result(getattr(worker, name)(request, **arguments))
    except Exception as exc:  # as the entrypoint turns it into an answer
        response = entrypoint.response_from_exception(exc)
    return Answer(response, worker, proxies)
