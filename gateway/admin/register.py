"""The register of current permits in the staff gateway (issue 24): supervisors import the
prefecture's export (CSV), see what it changes (added, changed, removed) before applying it or
once applied, and see when the register in force was imported and by whom. JSON for programs
(`Authorization: Bearer`, body `text/csv`) and a page (session cookie, CSRF, file upload).
Every import applied, and every preview, goes into the audit log (counts only). Nothing here
lists the register's entries: a diff names foreigner numbers and changed fields, no more.

A mixin of AdminGateway (gateway/admin/service.py), which supplies sessions, CSRF, rendering
and the audit log (`_api_staff`, `_page`, `_check_csrf`, `_render`, `_record`).
"""
from gateway.admin.supervision import EXPECTED_HERE, SUPERVISOR, route
from gateway.http import _read_bounded
from services.common.errors import (DomainError, InvalidRequest, PayloadTooLarge,
                                    UnsupportedMediaType)

CSV_TYPES = ("text/csv", "text/plain", "application/csv")
FIELD = "csv"


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
        return self._import(staff, _text(raw), apply=not preview)

    @route("GET", "/api/register", expected_exceptions=EXPECTED_HERE)
    def api_register_status(self, request):
        self._api_staff(request, SUPERVISOR)
        return self.register_service.status()

    # -- page ------------------------------------------------------------------------------------

    @route("GET", "/register", expected_exceptions=EXPECTED_HERE)
    def register_page(self, request):
        return self._page(request, SUPERVISOR, lambda staff: self._register_form(staff))

    @route("POST", "/register", expected_exceptions=EXPECTED_HERE)
    def register_submit(self, request):
        def handle(staff):
            limit = self._import_limit()
            if request.content_length and request.content_length > limit + 64 * 1024:
                return self._register_form(staff, error=_too_large(limit))
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
                result = self._import(staff, _text(raw), apply=apply)
            except DomainError as error:
                return self._register_form(staff, error=error)
            return self._register_form(staff, result=result)
        return self._page(request, SUPERVISOR, handle)

    # -- the work --------------------------------------------------------------------------------

    def _import(self, staff, text, apply):
        result = self.register_import.import_register(text, staff["username"], apply)
        # counts only: the audit log keeps who changed the register and how much
        self._record(staff["username"], "register_imported" if apply else "register_previewed",
                     "register", {"generation": result.get("previous")},
                     {"generation": result.get("generation"), **result["counts"]})
        return result

    def _import_limit(self):
        return self.settings.register_import_max_bytes

    def _register_form(self, staff, result=None, error=None):
        status, message = (error.status, error.message) if error else (200, None)
        try:
            state = self.register_service.status()
        except DomainError as unavailable:
            state, message = None, message or unavailable.message
            status = max(status, unavailable.status)
        return self._render(staff, "register.html.j2", status=status, state=state,
                            result=result, message=message,
                            errors=error.fields if error else {})
