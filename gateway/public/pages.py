"""The few HTML pages applicants reach from their e-mails. Wording lives in templates/."""
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from werkzeug.wrappers import Response

from services.common.reference_data import FREE_NOTICE, SITES, procedure_view
from services.common.timeutil import PARIS, parse_iso

ENV = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                  autoescape=True, undefined=StrictUndefined)


def html(http_status, template, **values):
    return Response(ENV.get_template(template).render(**values), status=http_status,
                    content_type="text/html; charset=utf-8",
                    # the page carries the token: keep it out of caches and referers
                    headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def booking_page(booking, token, just_cancelled=False, just_confirmed=False, ask_confirmation=False):
    start = parse_iso(booking["slot"]["start"]).astimezone(PARIS)
    return html(200, "booking.html.j2", booking=booking, token=token, notice=FREE_NOTICE,
                just_cancelled=just_cancelled, just_confirmed=just_confirmed,
                ask_confirmation=ask_confirmation, procedure=procedure_view(booking["procedure"]),
                site=SITES.get(booking["slot"]["site"], {"label": booking["slot"]["site"], "address": ""}),
                start=start.strftime("%d/%m/%Y %H:%M"))


def error_page(error):
    return html(error.status, "error.html.j2", status=error.status, message=error.message)
