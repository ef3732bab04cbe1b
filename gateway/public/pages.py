"""The applicants' pages: one request's language, CSRF binding and answer. Wording lives in templates/.

French first, English one click away (`?lang=en`, remembered in a cookie). Every page goes out
through gateway/html.py's page_response (strict CSP, no caching of personal pages).
"""
import functools
import logging
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Response

from gateway import csrf
from gateway.html import page_response
from services.common.errors import DomainError, InvalidRequest
from services.common.schemas import load_or_raise
from services.common.settings import setting

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
ENV = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True,
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
STYLESHEET = (HERE / "static" / "site.css").read_bytes()

LANGS = ("fr", "en")
LANG_COOKIE = "lang"
TOKEN_COOKIE = "booking_token"
REQUEST_TOKEN_COOKIE = "request_token"
CSRF_FIELD = "csrf_token"
YEAR = 365 * 24 * 3600


class PageSettings(DependencyProvider):
    """What the pages need from configuration, read once per process."""

    def setup(self):
        config = self.container.config
        secret = config.get("PUBLIC_FORM_SECRET")
        if not secret or len(str(secret)) < 16:
            raise ConfigurationError(
                "PUBLIC_FORM_SECRET must be set to a secret of at least 16 characters")
        self.csrf = csrf.CsrfTokens(str(secret))
        base = setting(config, "PUBLIC_BASE_URL", "http://127.0.0.1:8000")
        self.secure_cookies = base.lower().startswith("https://")
        self.report_url = setting(config, "REPORT_URL", "https://www.internet-signalement.gouv.fr")
        self.report_email = setting(config, "REPORT_EMAIL", "pref-etrangers@herault.gouv.fr")
        self.mail_domain = setting(config, "MAIL_DOMAIN", "rdv.herault.gouv.fr")
        # M7: the "no free slot" page offers to record a failed attempt (/attempts/new)
        self.attempts_enabled = setting(config, "PUBLIC_ATTEMPTS_ENABLED", True)

    def get_dependency(self, worker_ctx):
        return self


class Page:
    """One HTML request: its language, its CSRF binding, and the cookies its answer sets."""

    def __init__(self, request, settings):
        self.request = request
        self.settings = settings
        asked = request.args.get("lang")
        self.lang_asked = asked if asked in LANGS else None
        remembered = request.cookies.get(LANG_COOKIE)
        self.lang = self.lang_asked or (remembered if remembered in LANGS else "fr")
        self.other_lang = "en" if self.lang == "fr" else "fr"
        binding = request.cookies.get(csrf.COOKIE, "")
        self._new_binding = None if 16 <= len(binding) <= 64 else csrf.new_binding()
        self.binding = self._new_binding or binding
        self._binding_used = False
        self.cookies = []  # (name, value, options) set on whatever answer goes out

    def t(self, fr, en):
        """The text in this page's language: wording stays beside its translation."""
        return fr if self.lang == "fr" else en

    def csrf_token(self):
        self._binding_used = True
        return self.settings.csrf.issue(self.binding)

    def csrf_ok(self):
        return self.settings.csrf.valid(self.request.form.get(CSRF_FIELD),
                                        self.request.cookies.get(csrf.COOKIE))

    def switch_url(self):
        """This page in the other language: the same query, without a token or old lang."""
        query = [(k, v) for k, v in self.request.args.items(multi=True) if k not in ("lang", "token")]
        return f"{self.request.path}?{urlencode(query + [('lang', self.other_lang)])}"

    def set_cookie(self, name, value, **options):
        self.cookies.append((name, value, options))

    def render(self, template, status=200, **values):
        body = ENV.get_template(template).render(page=self, t=self.t, lang=self.lang, **values)
        # never cached, even pages without personal data: their language comes from a cookie
        return page_response(body, status=status, private=True)

    def redirect(self, location):
        response = page_response("", status=303)
        response.headers["Location"] = location
        return response

    def finish(self, response):
        if self.lang_asked:
            response.set_cookie(LANG_COOKIE, self.lang, max_age=YEAR, samesite="Lax",
                                secure=self.settings.secure_cookies, httponly=True)
        if self._new_binding and self._binding_used:
            response.set_cookie(csrf.COOKIE, self._new_binding, samesite="Lax", httponly=True,
                                secure=self.settings.secure_cookies, path="/")
        for name, value, options in self.cookies:
            response.set_cookie(name, value, samesite="Lax", httponly=True,
                                secure=self.settings.secure_cookies, **options)
        return response


def page(method):
    """A page entrypoint: gets a Page instead of the request; errors become pages, not JSON."""

    @functools.wraps(method)
    def run(self, request, *args, **kwargs):
        current = Page(request, self.page_settings)
        try:
            response = method(self, current, *args, **kwargs)
        except DomainError as error:
            response = error_page(current, error)
        except Exception as exc:  # the page still answers as a page, without a stack trace
            log.error("page %s failed: %r", request.path, exc)
            response = current.render("error.html.j2", status=500, kind="internal", back=None,
                                      message="")
        return current.finish(response)

    return run


def token_link(current, schema, cookie, reference, home, path):
    """An e-mail link with ?token=: the token goes into a cookie for the pages under `home`
    (one booking's or one request's), out of the address bar, the history and any later
    referrer. The redirect to `path`, or None when the address carries no token."""
    token = current.request.args.get("token")
    if not token:
        return None
    access = load_or_raise(schema, {"reference": reference, "token": token}, InvalidRequest)
    current.set_cookie(cookie, access["token"], path=home)
    return current.redirect(path)


def error_page(current, error, back=None):
    kind = {404: "not_found", 409: "slot_taken", 503: "unavailable"}.get(error.status, "invalid")
    return current.render("error.html.j2", status=error.status, kind=kind, back=back,
                          message=error.message)


def stylesheet():
    # cached by browsers and proxies: it is the same for everybody
    return Response(STYLESHEET, status=200, content_type="text/css; charset=utf-8",
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})
