"""A JSON HTTP entrypoint for the gateways, and the web server that guards them.

Expected domain errors become `{"error", "message", "fields"}` with their status; anything
else is logged and answered 500 without a stack trace. Unknown routes and methods answer JSON
too, so a client never has to parse an HTML error page.

The server protects the process when reached without the reverse proxy: a cap on open
connections (the oldest idle one makes room for a new one), a deadline for a request's
headers, and an accept loop that outlives "too many open files".
"""
import errno
import json
import logging
import resource
import time
from collections import OrderedDict
from functools import partial

import eventlet
from eventlet import greenio
from eventlet.event import Event
from eventlet.wsgi import STATE_IDLE
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer, WsgiApp
from werkzeug.exceptions import ClientDisconnected, HTTPException
from werkzeug.wrappers import Request, Response

from services.common.metrics import UNMATCHED, metrics_for
from services.common.errors import (EXPECTED, DomainError, InvalidRequest, PayloadTooLarge,
                                    UnsupportedMediaType)
from services.common.settings import setting

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
# deeper JSON is no booking request; json.loads itself fails (RecursionError) near 1,000
MAX_JSON_DEPTH = 20
# descriptors kept for the bus, the stores and the process itself when capping connections
RESERVED_FDS = 200
# a new connection has this long to send its request before it may be closed to make room:
# an applicant's request arrives in milliseconds, a flood's idle connections never do
MIN_IDLE_SECONDS = 0.5
# accept() errors that mean "out of resources for now", not "the listening socket is broken"
RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# a metric label takes these methods as they are, anything else as "other" (bounded)
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def json_response(status, payload, headers=None):
    text = json.dumps(payload, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate somewhere: JSON's \u escapes can carry it
        text = json.dumps(payload)
    return Response(text, status=status, headers=headers,
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
            metrics_for(self.server.container).observe_request(
                UNMATCHED, request.method if request.method in KNOWN_METHODS else "other",
                response.status_code, 0.0)
        return response(environ, start_response)


def _http_error(exc):
    """werkzeug's HTTPException in our JSON shape, with the headers it carries (a redirect's
    Location, a 405's Allow): without them a client cannot follow or correct the request."""
    response = error_response(exc.code, exc.name.lower().replace(" ", "_"), exc.description)
    # werkzeug's own answer, for its headers: RequestRedirect sets Location only there
    for name, value in exc.get_response().headers.items():
        if name.lower() not in BODY_HEADERS:
            response.headers[name] = value
    return response


# what describes werkzeug's HTML body, not ours
BODY_HEADERS = {"content-type", "content-length"}


class _HeaderTimeout(Exception):
    pass


class _Connection(list):
    """eventlet's [address, socket, state] for one connection, whether a request of it is
    being answered (then it is never closed to make room), and since when it waits for one."""

    busy = False

    def __init__(self, items):
        super().__init__(items)
        self.since = time.monotonic()


class GuardedProtocol(HttpOnlyProtocol):
    """A request's line and headers must arrive within the server's idle timeout, counted
    from the connection's opening or its previous answer: an idle or slowly-typed ("half a
    header") connection is closed instead of holding a descriptor for ever. The timer stops
    once the headers are in, so a slow answer from a service is not cut short here."""

    def handle_one_request(self):
        self.conn_state.since = time.monotonic()
        self._header_timer = eventlet.Timeout(self.server.header_timeout, _HeaderTimeout)
        try:
            super().handle_one_request()
        except _HeaderTimeout:
            self.close_connection = 1
        finally:
            self._header_timer.cancel()
            self.conn_state.busy = False

    def get_environ(self):
        # called once the headers are parsed, right before the application runs
        self._header_timer.cancel()
        self.conn_state.busy = True
        return super().get_environ()


class JsonWebServer(WebServer):
    def get_wsgi_app(self):
        return _JsonWsgiApp(self)

    def get_wsgi_server(self, sock, wsgi_app, protocol=GuardedProtocol, debug=False):
        server = super().get_wsgi_server(sock, wsgi_app, protocol=protocol, debug=debug)
        config = self.container.config
        server.header_timeout = setting(config, "WEB_IDLE_TIMEOUT")
        # also bounds each read of a body and each write of an answer
        server.socket_timeout = server.header_timeout
        return server

    def start(self):
        # nameko's start() with eventlet's default listen backlog of 50: a release brings
        # hundreds of simultaneous connections, and those past the backlog were reset
        if not self._starting:
            self._starting = True
            config = self.container.config
            soft_limit = raise_open_files_limit()
            self.max_connections = max(1, min(setting(config, "WEB_MAX_CONNECTIONS"),
                                              soft_limit - RESERVED_FDS))
            self._open = OrderedDict()  # id -> _Connection, oldest first, not yet closed by us
            self._live = 0  # connections whose descriptor is still open (closed by us included)
            self._slot_freed = Event()
            self._last_resource_warning = 0.0
            backlog = setting(config, "WEB_LISTEN_BACKLOG")
            self._sock = eventlet.listen(self.bind_addr, backlog=backlog)
            self._sock.settimeout(None)  # as nameko: work around kombu issue 838
            self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
            self._gt = self.container.spawn_managed_thread(self.run)

    def run(self):
        """nameko's accept loop, made to survive running out of descriptors and to keep the
        number of open connections under the cap."""
        while self._is_accepting:
            if self._live >= self.max_connections:
                # a descriptor is freed only once its greenthread has seen the end: wait
                # for that, rather than accept ahead of it
                self._close_oldest_idle()
                self._wait_for_a_free_slot()
                continue
            try:
                sock, address = self._sock.accept()
            except OSError as exc:
                if not self._is_accepting:
                    return
                if exc.errno not in RESOURCE_ERRNOS:
                    raise
                self._out_of_resources(exc)
                continue
            sock.settimeout(self._serv.socket_timeout)
            conn = _Connection([address, sock, STATE_IDLE])
            self._open[id(conn)] = conn
            self._live += 1
            self.container.spawn_managed_thread(partial(self._serve, conn))

    def _serve(self, conn):
        try:
            self.process_request(conn[1], conn[0], conn)
        finally:
            self._open.pop(id(conn), None)
            self._live -= 1
            try:
                conn[1].close()
            except OSError:
                pass
            if not self._slot_freed.ready():
                self._slot_freed.send(True)

    def process_request(self, sock, address, conn=None):
        conn = conn if conn is not None else _Connection([address, sock, STATE_IDLE])
        try:
            self._serv.process_request(conn)
        except OSError as exc:
            # as nameko: a client gone very early (eventlet issue 353); also a connection
            # we shut down to make room, or its client gone
            gone = exc.errno in (errno.EBADF, errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE)
            if not gone and "raw readinto() returned invalid length" not in str(exc):
                raise

    def _close_oldest_idle(self):
        """Close the connection that has waited longest without sending a whole request, if
        it has had MIN_IDLE_SECONDS to send one; False when there is none such."""
        oldest_allowed = time.monotonic() - MIN_IDLE_SECONDS
        for key, conn in self._open.items():
            if not conn.busy and conn.since <= oldest_allowed:
                del self._open[key]
                greenio.shutdown_safe(conn[1])  # its reader sees the end and finishes
                return True
        return False

    def _wait_for_a_free_slot(self):
        """Until a connection ends, or one of the idle ones becomes old enough to close."""
        self._slot_freed = Event()
        with eventlet.Timeout(MIN_IDLE_SECONDS / 5, False):
            self._slot_freed.wait()

    def _out_of_resources(self, exc):
        now = time.monotonic()
        if now - self._last_resource_warning > 10:
            self._last_resource_warning = now
            log.warning("accept() failed (%s) with %d connections open: closing idle ones",
                        errno.errorcode.get(exc.errno, exc.errno), len(self._open))
        if not self._close_oldest_idle():
            self._wait_for_a_free_slot()
        eventlet.sleep(0.01)  # the descriptor is freed when its greenthread ends


def raise_open_files_limit():
    """Raise this process's soft limit on open files to the hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %s to %s: %s", soft, hard, exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class JsonHttp(HttpRequestHandler):
    """`private=True` for answers that carry personal data: no cache may keep them."""

    server = JsonWebServer()

    def __init__(self, method, url, private=False, **kwargs):
        kwargs.setdefault("expected_exceptions", EXPECTED)
        self.private = private
        super().__init__(method, url, **kwargs)

    def handle_request(self, request):
        started = time.perf_counter()
        response = super().handle_request(request)
        # the URL rule, never the raw path: bounded, and free of references and tokens
        metrics_for(self.container).observe_request(self.url, self.method, response.status_code,
                                                    time.perf_counter() - started)
        if self.private:
            response.headers["Cache-Control"] = "no-store"
        return response

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

TOO_LARGE = {"_body": [f"At most {MAX_BODY_BYTES // 1024} KiB."]}


def read_json(request):
    """The request body as a JSON object, or the DomainError saying what is wrong with it.

    Only `Content-Type: application/json`: a web page can send text/plain or a form to this
    site from a visitor's browser without asking, but not JSON. Chunked bodies are read too,
    never more than MAX_BODY_BYTES of them.
    """
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Send the request body as JSON, with the header "
                                   "Content-Type: application/json.",
                                   {"Content-Type": ["Must be application/json."]})
    if request.content_length and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge("The request body is too large.", TOO_LARGE)
    if request.content_length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        # eventlet decodes the chunks and ends the stream at the last one, but does not say
        # so in the environ; without this flag werkzeug gives an empty body
        request.environ["wsgi.input_terminated"] = True
    raw = _read_bounded(request.stream, MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge("The request body is too large.", TOO_LARGE)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest("The request body is not valid JSON.", {"_body": ["Not valid JSON."]})
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", {"_body": ["Not an object."]})
    _check_text(body)
    return body


def _read_bounded(stream, limit):
    chunks, size = [], 0
    try:
        while size < limit:
            chunk = stream.read(limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    # the client stopped sending (a timeout, or werkzeug's word for a short body) or broke
    # the chunking
    except (OSError, ValueError, ClientDisconnected):
        raise InvalidRequest("The request body did not arrive whole.", {"_body": ["Incomplete."]})
    return b"".join(chunks)


def _has_surrogate(text):
    return any("\ud800" <= c <= "\udfff" for c in text)


def _check_text(body):
    """Refuse nesting no request needs and lone surrogates (valid in JSON's escapes, not in
    UTF-8: they would break every later encode), naming the top-level field they are in."""
    bad_text = ["Contains a lone surrogate (\\uD800-\\uDFFF), which is not a character."]
    stack = [(key, value, 1) for key, value in body.items()]
    for key in body:
        if _has_surrogate(key):
            raise InvalidRequest("A field name is not valid text.", {"_body": bad_text})
    while stack:
        field, value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest("The request body is nested too deeply.",
                                 {field: [f"At most {MAX_JSON_DEPTH} levels."]})
        if isinstance(value, str):
            if _has_surrogate(value):
                raise InvalidRequest("Some fields are not valid.", {field: bad_text})
        elif isinstance(value, dict):
            for sub_key, sub in value.items():
                if _has_surrogate(sub_key):
                    raise InvalidRequest("Some fields are not valid.", {field: bad_text})
                stack.append((field, sub, depth + 1))
        elif isinstance(value, list):
            stack.extend((field, item, depth + 1) for item in value)
