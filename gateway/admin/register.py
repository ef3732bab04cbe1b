"""The register of current permits and of long-stay visas in the staff gateway (issue 24):
supervisors import the prefecture's exports (CSV), see what one changes (added, changed,
removed) before applying it or once applied, and see when the book in force was imported and
by whom. JSON for programs (`Authorization: Bearer`, body `text/csv`) and a page (session
cookie, CSRF, file upload), the same code for both books (`BOOKS`): permits under
/api/register and /register, visas under /api/register/visas and /register/visas. Every import
applied, and every preview, goes into the audit log (counts only). Nothing here lists the
register's entries: a diff names foreigner or visa numbers and changed fields, no more.

A mixin of AdminGateway (gateway/admin/service.py), which supplies sessions, CSRF, rendering
and the audit log (`_api_staff`, `_page`, `_check_csrf`, `_render`, `_record`).
"""
import re

from gateway.admin.supervision import EXPECTED_HERE, SUPERVISOR, route
from gateway.http import _read_bounded
from services.common.errors import (DomainError, InvalidRequest, PayloadTooLarge,
                                    UnsupportedMediaType)

CSV_TYPES = ("text/csv", "text/plain", "application/csv")
FIELD = "csv"
# the register's books: the register service's RPCs, the page's address and words, the audit
# log's actions
BOOKS = {
    "permits": {"import": "import_register", "status": "status", "path": "/register",
                "audit": "register", "count": "permits", "key": "foreigner_number",
                "title": ("Registre des titres en cours", "Register of current permits"),
                "noun": "titres",
                "hint": "Les demandes de renouvellement doivent correspondre à un titre de ce "
                        "registre (numéro d'étranger, date de naissance, nom de famille).",
                "columns": "foreigner_number, family_name, given_names, birth_date, "
                           "permit_kind, expiry",
                "optional": "email", "none": "toute demande de renouvellement est refusée"},
    "visas": {"import": "import_visas", "status": "visa_status", "path": "/register/visas",
              "audit": "visas", "count": "visas", "key": "visa_number",
              "title": ("Registre des visas de long séjour", "Register of long-stay visas"),
              "noun": "visas",
              "hint": "Les premières demandes (VISA_CHECKED_PROCEDURES) doivent correspondre à "
                      "un visa de ce registre (numéro du visa, date de naissance, nom de "
                      "famille) ; sans visa, l'accueil dépose la demande.",
              "columns": "visa_number, family_name, given_names, birth_date, visa_kind "
                         "(vls_ts ou vls), validity_end",
              "optional": None, "none": "toute première demande en ligne est refusée"},
}

# the register's reasons for refusing a file (services/register/rules.py, in English for
# programs), as a supervisor reads them on the page: (English pattern, French)
_REASONS_FR = [
    (r"empty file", "le fichier est vide"),
    (r"empty", "vide"),
    (r"control or invisible characters", "caractères de contrôle ou invisibles"),
    (r"not a name", "ce n'est pas un nom"),
    (r"not CSV \((.*)\)", r"ce n'est pas du CSV (\1)"),
    (r"missing column\(s\): (.*)", r"colonne(s) manquante(s) : \1"),
    (r"unknown or repeated column\(s\): (.*)", r"colonne(s) inconnue(s) ou en double : \1"),
    (r"more than (\d+) permits", r"plus de \1 titres"),
    (r"more than (\d+) visas", r"plus de \1 visas"),
    (r"(\d+) fields, the header has (\d+)", r"\1 champs, l'en-tête en a \2"),
    (r"repeated \(also on an earlier line\)", "en double (déjà sur une ligne plus haut)"),
    (r"no permit in the file", "aucun titre dans le fichier"),
    (r"no visa in the file", "aucun visa dans le fichier"),
    (r"not a date \(YYYY-MM-DD or DD/MM/YYYY\)", "ce n'est pas une date (AAAA-MM-JJ ou JJ/MM/AAAA)"),
    (r"not 10 digits", "il faut 10 chiffres"),
    (r"not 6 to 20 letters and digits", "il faut de 6 à 20 lettres et chiffres"),
    (r"one of (.*)", r"une valeur parmi \1"),
    (r"not an e-mail address", "ce n'est pas une adresse électronique"),
    (r"Missing\.", "Choisissez le fichier de l'export."),
    (r"At most (\d+) bytes\.", r"\1 octets au plus."),
]
_WHERE_FR = {"_header": "Ligne d'en-tête", "_file": "Fichier", "_line": "Ligne {line}"}


def problem_fr(text):
    """A reason of `fields.csv` ("line N, field: reason") in French for the page: the line,
    the column (its name as in the file) and why; a text it does not know, as it is."""
    found = re.fullmatch(r"line (\d+), (\w+): (.*)", text)
    where, reason = "", text
    if found:
        line, field, reason = found.groups()
        where = _WHERE_FR.get(field, "Ligne {line}, colonne « {field} »").format(
            line=line, field=field) + " : "
    for pattern, french in _REASONS_FR:
        if re.fullmatch(pattern, reason):
            return where + re.sub(pattern, french, reason)
    return where + reason


def _too_large(limit):
    return PayloadTooLarge(f"Le fichier dépasse {limit // (1024 * 1024)} Mio. / The file is larger "
                           f"than {limit // (1024 * 1024)} MiB.",
                           {FIELD: [f"At most {limit} bytes."]})


def _text(raw):
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("Le fichier n'est pas en UTF-8. Rien n'a été importé. / The file is "
                             "not UTF-8. Nothing was imported.", {FIELD: ["Not UTF-8 text."]})


class RegisterAdmin:
    # uses AdminGateway's `register_service` and `register_import` proxies (service.py)

    # -- JSON ------------------------------------------------------------------------------------

    @route("POST", "/api/register/import", expected_exceptions=EXPECTED_HERE)
    def api_register_import(self, request):
        """Body: the export as `text/csv`; `?preview=1` diffs without applying."""
        return self._api_import(request, "permits")

    @route("GET", "/api/register", expected_exceptions=EXPECTED_HERE)
    def api_register_status(self, request):
        self._api_staff(request, SUPERVISOR)
        return self.register_service.status()

    @route("POST", "/api/register/visas/import", expected_exceptions=EXPECTED_HERE)
    def api_visas_import(self, request):
        """The long-stay visas' export, as /api/register/import."""
        return self._api_import(request, "visas")

    @route("GET", "/api/register/visas", expected_exceptions=EXPECTED_HERE)
    def api_visas_status(self, request):
        self._api_staff(request, SUPERVISOR)
        return self.register_service.visa_status()

    # -- pages -----------------------------------------------------------------------------------

    @route("GET", "/register", expected_exceptions=EXPECTED_HERE)
    def register_page(self, request):
        return self._page(request, SUPERVISOR, lambda staff: self._register_form(staff))

    @route("POST", "/register", expected_exceptions=EXPECTED_HERE)
    def register_submit(self, request):
        return self._submit(request, "permits")

    @route("GET", "/register/visas", expected_exceptions=EXPECTED_HERE)
    def visas_page(self, request):
        return self._page(request, SUPERVISOR, lambda staff: self._register_form(staff, "visas"))

    @route("POST", "/register/visas", expected_exceptions=EXPECTED_HERE)
    def visas_submit(self, request):
        return self._submit(request, "visas")

    # -- the work --------------------------------------------------------------------------------

    def _api_import(self, request, book):
        staff = self._api_staff(request, SUPERVISOR)
        if request.mimetype not in CSV_TYPES:
            raise UnsupportedMediaType("Send the export as text/csv.",
                                       {"Content-Type": ["Must be text/csv."]})
        limit = self._import_limit()
        if request.content_length and request.content_length > limit:
            raise _too_large(limit)
        if request.content_length is None and "chunked" in request.headers.get(
                "Transfer-Encoding", "").lower():
            request.environ["wsgi.input_terminated"] = True
        # read as read_json reads: bounded, and a client that stops sending is a 400
        raw = _read_bounded(request.stream, limit + 1)
        if len(raw) > limit:
            raise _too_large(limit)
        preview = request.args.get("preview", "") in ("1", "true", "yes")
        return self._import(staff, _text(raw), apply=not preview, book=book)

    def _submit(self, request, book):
        def handle(staff):
            limit = self._import_limit()
            if request.content_length and request.content_length > limit + 64 * 1024:
                return self._register_form(staff, book, error=_too_large(limit))
            self._check_csrf(request, staff)
            upload = request.files.get(FIELD)
            apply = request.form.get("action") == "apply"
            try:
                if upload is None or not upload.filename:
                    raise InvalidRequest("Choisissez le fichier de l'export. / Choose the export "
                                         "file.", {FIELD: ["Missing."]})
                raw = upload.stream.read(limit + 1)
                if len(raw) > limit:
                    raise _too_large(limit)
                result = self._import(staff, _text(raw), apply=apply, book=book)
            except DomainError as error:
                return self._register_form(staff, book, error=error)
            return self._register_form(staff, book, result=result)
        return self._page(request, SUPERVISOR, handle)

    def _import(self, staff, text, apply, book="permits"):
        words = BOOKS[book]
        result = getattr(self.register_import, words["import"])(text, staff["username"], apply)
        # counts only: the audit log keeps who changed the register and how much
        self._record(staff["username"],
                     f"{words['audit']}_imported" if apply else f"{words['audit']}_previewed",
                     "register", {"generation": result.get("previous")},
                     {"generation": result.get("generation"), **result["counts"]})
        return result

    def _import_limit(self):
        return self.settings.register_import_max_bytes

    def _register_form(self, staff, book="permits", result=None, error=None):
        words = BOOKS[book]
        status, message = (error.status, error.message) if error else (200, None)
        file_error = None
        if error is not None and FIELD in error.fields:
            # the file's problem in French beside its field; the top says that nothing changed
            file_error = " ".join(problem_fr(reason) for reason in error.fields[FIELD])
            message = "Rien n'a été importé."
        try:
            state = getattr(self.register_service, words["status"])()
        except DomainError as unavailable:
            state, message = None, message or unavailable.message
            status = max(status, unavailable.status)
        return self._render(staff, "register.html.j2", status=status, state=state,
                            result=result, message=message, book=words,
                            file_error=file_error,
                            errors={k: v for k, v in error.fields.items() if k != FIELD}
                            if error else {})
