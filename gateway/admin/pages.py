"""Server-rendered staff pages (French first): Jinja2 templates, no script, one CSS file."""
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from werkzeug.wrappers import Response

from gateway.html import page_response
from services.common.reference_data import PROCEDURES, SITES
from services.common.timeutil import PARIS, parse_iso

HERE = Path(__file__).parent
ENV = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True,
                  undefined=StrictUndefined)
CSS = (HERE / "static" / "admin.css").read_bytes()

STATUS_FR = {"pending": "Non confirmé", "active": "Attendu", "checked_in": "Reçu",
             "cancelled": "Annulé"}
REASON_FR = {
    "applicant": "annulé par la personne",
    "multiple_bookings_same_email": "plusieurs rendez-vous avec une même adresse (fraude)",
    "name_not_exact": "nom non exact à la réservation (fraude)",
    "slot_grabbing": "captation automatisée (fraude)",
    "name_mismatch": "nom différent de la pièce d'identité au guichet",
    "staff": "annulé par la préfecture",
    "not_confirmed": "non confirmé depuis le courriel à temps",
    "email_already_used": "adresse déjà utilisée pour un autre rendez-vous confirmé",
    "pending": "pas encore confirmé depuis le courriel",
    "other_site": "rendez-vous sur un autre site",
    "other_day": "rendez-vous un autre jour",
    "cancelled": "rendez-vous annulé",
}
FRAUD_REASONS = ("multiple_bookings_same_email", "name_not_exact", "slot_grabbing")


def local_time(iso, fmt="%H:%M"):
    return parse_iso(iso).astimezone(PARIS).strftime(fmt) if iso else ""


ENV.filters["local"] = local_time
ENV.globals.update(STATUS_FR=STATUS_FR, REASON_FR=REASON_FR, SITES=SITES, PROCEDURES=PROCEDURES)


def render(template, status=200, headers=None, **values):
    values.setdefault("staff", None)
    values.setdefault("csrf", "")
    return page_response(ENV.get_template(template).render(**values), status=status,
                         headers=headers)


def redirect(location, status=303):
    response = page_response("", status=status)
    response.headers["Location"] = location
    return response


def css():
    return Response(CSS, content_type="text/css; charset=utf-8",
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})
