"""The applicants' pages: one request's language, CSRF binding and answer. Wording lives in templates/.

French first, English and Arabic one click away (`?lang=en`, `?lang=ar`, remembered in a
cookie; services/common/i18n.py: Arabic pages are right to left, their text from the catalogue). Every page goes out
through gateway/html.py's page_response (strict CSP, no caching of personal pages).
"""
import functools
import gzip
import logging
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Response

from gateway import csrf
from gateway.html import page_response
from gateway.public import notices
from services.common import i18n, register_check
from services.common.errors import DomainError, InvalidRequest, NotFound
from services.common.i18n import LANGS
from services.common.reference_data import PROCEDURES, WAIVER_RULE
from services.common.schemas import load_or_raise
from services.common.settings import setting

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
ENV = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True,
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.globals["waiver_rule"] = i18n.with_langs(WAIVER_RULE)  # M7: the one wording of when attempts count
STYLESHEET = (HERE / "static" / "site.css").read_bytes()
# the State design system's files (`make install`: npm ci, then deploy/dsfr_assets.py)
DSFR_DIR = HERE / "static" / "dsfr"
DSFR_TYPES = {".css": "text/css; charset=utf-8", ".woff2": "font/woff2", ".woff": "font/woff",
              ".svg": "image/svg+xml"}

# each language in itself, for the language selector (an unknown code shows as its code)
LANGUAGE_NAMES = i18n.NAMES
LANG_COOKIE = "lang"
TOKEN_COOKIE = "booking_token"
REQUEST_TOKEN_COOKIE = "request_token"
ATTEMPT_TOKEN_COOKIE = "attempt_token"
CSRF_FIELD = "csrf_token"
YEAR = 365 * 24 * 3600


class PageSettings(DependencyProvider):
    """What the pages (and the JSON API's procedures) need from configuration, read once per
    process."""

    def setup(self):
        config = self.container.config
        secret = config.get("PUBLIC_FORM_SECRET")
        if not secret or len(str(secret)) < 16:
            raise ConfigurationError(
                "PUBLIC_FORM_SECRET must be set to a secret of at least 16 characters")
        self.csrf = csrf.CsrfTokens(str(secret))
        base = setting(config, "PUBLIC_BASE_URL")
        self.base_url = base  # printed links and the attestation's QR (M7)
        self.secure_cookies = base.lower().startswith("https://")
        self.report_url = setting(config, "REPORT_URL")
        self.report_email = setting(config, "REPORT_EMAIL")
        self.mail_domain = setting(config, "MAIL_DOMAIN")
        # M7: the "no free slot" page offers to record a failed attempt (/attempts/new)
        self.attempts_enabled = setting(config, "PUBLIC_ATTEMPTS_ENABLED")
        # what the notices state (gateway/public/notices.py)
        self.retention = notices.retention(config)
        self.host = setting(config, "PUBLIC_HOST")
        # issue 24: what a request for each procedure must carry, as the requests service
        # checks it under these settings (the request form's fields, GET /api/procedures)
        self.request_requires = {code: register_check.request_requires(code, config)
                                 for code in PROCEDURES}

    def required_fields(self, procedure):
        """The identifiers a request for `procedure` must carry ("visa_number",
        "foreigner_number"): the request form asks for these."""
        return {required["field"] for required in self.request_requires[procedure]}

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
        self.lang = self.lang_asked or (remembered if remembered in LANGS else i18n.DEFAULT)
        self.dir = i18n.direction(self.lang)  # <html dir>: Arabic pages mirror
        binding = request.cookies.get(csrf.COOKIE, "")
        self._new_binding = None if 16 <= len(binding) <= 64 else csrf.new_binding()
        self.binding = self._new_binding or binding
        self._binding_used = False
        self.cookies = []  # (name, value, options) set on whatever answer goes out

    def t(self, fr, en):
        """The text in this page's language: wording stays beside its translation."""
        return i18n.translate(self.lang, fr, en)

    def csrf_token(self):
        self._binding_used = True
        return self.settings.csrf.issue(self.binding)

    def csrf_ok(self):
        return self.settings.csrf.valid(self.request.form.get(CSRF_FIELD),
                                        self.request.cookies.get(csrf.COOKIE))

    def language_url(self, code):
        """This page in language `code`: the same query, without a token or old lang."""
        query = [(k, v) for k, v in self.request.args.items(multi=True) if k not in ("lang", "token")]
        return f"{self.request.path}?{urlencode(query + [('lang', code)])}"

    def language_name(self, code):
        return LANGUAGE_NAMES.get(code, code.upper())

    def languages(self):
        """The language selector's entries: (code, name in itself, this page's URL in it)."""
        return [(code, self.language_name(code), self.language_url(code)) for code in LANGS]

    @staticmethod
    def direction(code):
        """"rtl" for a language written right to left (Arabic), else "ltr"."""
        return i18n.direction(code)

    def set_cookie(self, name, value, **options):
        self.cookies.append((name, value, options))

    def render(self, template, status=200, public=False, **values):
        """public: the same for everyone in a language (the fairness page, the notices), so
        caches may keep it per Cookie; answers that set the language cookie are not kept."""
        body = ENV.get_template(template).render(page=self, t=self.t, lang=self.lang, **values)
        if public and not self.lang_asked:
            return page_response(body, status=status, private=False, headers={"Vary": "Cookie"})
        # never cached otherwise, even pages without personal data: their language comes
        # from a cookie
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


def _dsfr_files():
    """{relative path: (bytes, gzipped bytes or None)} of the DSFR copy, read and compressed
    once: only these names are ever served."""
    files = {}
    for path in sorted(DSFR_DIR.rglob("*")):
        if path.is_file() and path.suffix in DSFR_TYPES:
            body = path.read_bytes()
            # text compresses (the stylesheet: 728 KB, 94 KB gzipped); fonts are compressed
            packed = gzip.compress(body, 9, mtime=0) if path.suffix in (".css", ".svg") else None
            files[str(path.relative_to(DSFR_DIR))] = (body, packed)
    if "dsfr.min.css" not in files:
        log.warning("the DSFR files are missing from %s: run `make install`", DSFR_DIR)
    return files


DSFR_FILES = _dsfr_files()


def dsfr_file(request, name):
    """One file of the design system (its stylesheet, a font, an icon), gzipped for a client
    that takes it, cached a day by browsers and proxies: its content changes only with the
    version, which `make install` brings with a new copy. 404 for any other name."""
    found = DSFR_FILES.get(name)
    if found is None:
        raise NotFound("No such file.")
    body, packed = found
    headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
    if packed is not None:
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.accept_encodings:
            body, headers["Content-Encoding"] = packed, "gzip"
    return Response(body, status=200, content_type=DSFR_TYPES[Path(name).suffix],
                    headers=headers)


def stylesheet():
    # cached by browsers and proxies: it is the same for everybody
    return Response(STYLESHEET, status=200, content_type="text/css; charset=utf-8",
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})
