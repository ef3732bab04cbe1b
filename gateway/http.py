"""A JSON HTTP entrypoint for the gateways.

Expected domain errors become `{"error", "message", "fields"}` with their status; anything
else is logged and answered 500 without a stack trace. Unknown routes and methods answer JSON
too, so a client never has to parse an HTML error page.
"""
import json
import logging

import eventlet
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from services.common.errors import EXPECTED, DomainError, InvalidRequest
from services.common.settings import setting

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024


def json_response(status, payload, headers=None):
    return Response(json.dumps(payload, ensure_ascii=False), status=status, headers=headers,
                    content_type="application/json; charset=utf-8")


def error_response(status, code, message, fields=None):
    return json_response(status, {"error": code, "message": message, "fields": fields or {}})


class _JsonWsgiApp(WsgiApp):
    """nameko's WsgiApp, with werkzeug's routing errors (404, 405) answered in JSON."""

    def __call__(self, environ, start_response):
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
            request.path_values = values
            response = provider.handle_request(request)
        except HTTPException as exc:
            response = _http_error(exc)
        return response(environ, start_response)


def _http_error(exc):
    return error_response(exc.code, exc.name.lower().replace(" ", "_"), exc.description)


class JsonWebServer(WebServer):
    def get_wsgi_app(self):
        return _JsonWsgiApp(self)

    def start(self):
        # nameko's start() with eventlet's default listen backlog of 50: a release brings
        # hundreds of simultaneous connections, and those past the backlog were reset
        if not self._starting:
            self._starting = True
            backlog = setting(self.container.config, "WEB_LISTEN_BACKLOG", 1024)
            self._sock = eventlet.listen(self.bind_addr, backlog=backlog)
            self._sock.settimeout(None)  # as nameko: work around kombu issue 838
            self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
            self._gt = self.container.spawn_managed_thread(self.run)


class JsonHttp(HttpRequestHandler):
    server = JsonWebServer()

    def __init__(self, method, url, **kwargs):
        kwargs.setdefault("expected_exceptions", EXPECTED)
        super().__init__(method, url, **kwargs)

    def response_from_result(self, result):
        if isinstance(result, Response):
            return result
        status, payload = result if isinstance(result, tuple) else (200, result)
        return json_response(status, payload)

    def response_from_exception(self, exc):
        if isinstance(exc, DomainError):
            return error_response(exc.status, exc.code, exc.message, exc.fields)
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        log.error("unexpected error: %r", exc)
        return error_response(500, "internal_error", "Internal error. Please try again later.")


json_http = JsonHttp.decorator


def read_json(request):
    """The request body as a JSON object, or InvalidRequest saying what is wrong with it."""
    if request.content_length and request.content_length > MAX_BODY_BYTES:
        raise InvalidRequest("The request body is too large.", {"_body": ["At most 16 KiB."]})
    raw = request.get_data(cache=False)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest("The request body is too large.", {"_body": ["At most 16 KiB."]})
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The request body is not valid JSON.", {"_body": ["Not valid JSON."]})
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", {"_body": ["Not an object."]})
    return body
