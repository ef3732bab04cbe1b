"""Turn a booking event into the message to send. All wording lives in templates/."""
import re
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from services.common.ics import fold_ics, ics_text
from services.common.reference_data import PROCEDURES, SITES
from services.common.timeutil import PARIS, long_date, parse_iso, utcnow

TEMPLATES = Path(__file__).parent / "templates"

KIND_FOR_EVENT = {"booking_created": "confirmation", "booking_cancelled": "cancellation",
                  "attempt_recorded": "attempt_receipt", "request_filed": "request_filed",
                  "offer_made": "offer"}


ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=lambda name: name is not None and ".html" in name,
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
ENV.filters["ics"] = ics_text


def _ics_time(value):
    return value.strftime("%Y%m%dT%H%M%SZ")


def context(event, settings):
    start = parse_iso(event["slot_start"])
    local = start.astimezone(PARIS)
    identity = event["identity"]
    procedure = PROCEDURES.get(event["procedure"], {})
    site = SITES.get(event["site"], {"label": event["site"], "address": ""})
    token = event.get("token")
    base = settings["public_base_url"].rstrip("/")
    return {
        "reference": event["reference"],
        "family_name": identity["family_name"],
        "given_names": identity["given_names"],
        "exact_name": f"{identity['family_name'].upper()} {identity['given_names']}".strip(),
        "procedure_fr": procedure.get("label_fr", event["procedure"]),
        "procedure_en": procedure.get("label_en", event["procedure"]),
        "walk_in": procedure.get("walk_in"),
        "site_label": site["label"],
        "site_address": site["address"],
        "date_fr": long_date(local, "fr"),
        "date_en": long_date(local, "en"),
        "time": local.strftime("%H:%M"),
        "manage_url": f"{base}/bookings/{event['reference']}?token={token}" if token else base,
        # a page with a button: a mail client fetching the link ahead does not confirm
        "confirm_url": (f"{base}/bookings/{event['reference']}/confirm?token={event['confirm_token']}"
                        if event.get("confirm_token") else base),
        "confirm_minutes": int(settings.get("confirm_minutes") or 0),
        # an accepted offer (issue 12) is born confirmed: its e-mail asks nothing more
        "confirmed": bool(event.get("offer_id")),
        "reason": event.get("reason"),
        "report_url": settings["report_url"],
        "report_email": settings["report_email"],
        "mail_domain": settings["mail_domain"],
        "dtstamp": _ics_time(parse_iso(event["occurred_at"])),
        "dtstart": _ics_time(start),
        "dtend": _ics_time(parse_iso(event["slot_end"])),
    }


def attempt_context(event, settings):
    """The receipt of a recorded failed attempt (M7): when, for what, and the link to the file."""
    at = parse_iso(event["recorded_at"]).astimezone(PARIS)
    procedure = PROCEDURES.get(event["procedure"], {})
    base = settings["public_base_url"].rstrip("/")
    return {
        "reference": event["reference"],
        "procedure_fr": procedure.get("label_fr", event["procedure"]),
        "procedure_en": procedure.get("label_en", event["procedure"]),
        "foreigner_number": event.get("foreigner_number"),
        "date_fr": long_date(at, "fr"),
        "date_en": long_date(at, "en"),
        "time": at.strftime("%H:%M"),
        "token": event["token"],
        "attempts_url": f"{base}/api/attempts/{event['reference']}?token={event['token']}",
        "attestation_url": f"{base}/api/attempts/{event['reference']}/attestation?token={event['token']}",
        "report_url": settings["report_url"],
        "report_email": settings["report_email"],
    }


def request_context(event, settings):
    """A request filed (its confirmation link) or an offer made (slot, deadline, links)."""
    procedure = PROCEDURES.get(event["procedure"], {})
    base = settings["public_base_url"].rstrip("/")
    token = event["token"]
    values = {
        "reference": event["reference"],
        "procedure_fr": procedure.get("label_fr", event["procedure"]),
        "procedure_en": procedure.get("label_en", event["procedure"]),
        "request_url": f"{base}/requests/{event['reference']}?token={token}",
        "confirm_url": f"{base}/requests/{event['reference']}/confirm?token={token}",
        "report_url": settings["report_url"],
        "report_email": settings["report_email"],
    }
    for key in ("confirm_by", "deadline", "slot_start"):
        if event.get(key):
            local = parse_iso(event[key]).astimezone(PARIS)
            values[f"{key}_fr"] = f"{long_date(local, 'fr')} à {local:%H:%M}"
            values[f"{key}_en"] = f"{long_date(local, 'en')} at {local:%H:%M}"
    if event.get("site"):
        site = SITES.get(event["site"], {"label": event["site"], "address": ""})
        values.update(site_label=site["label"], site_address=site["address"])
    return values


def compose(event_type, event, settings):
    """The message for this event: kind, recipient, subject, text, html and .ics (or None)."""
    kind = KIND_FOR_EVENT[event_type]
    if event_type == "attempt_recorded":
        values = attempt_context(event, settings)
    elif event_type in ("request_filed", "offer_made"):
        values = request_context(event, settings)
    else:
        values = context(event, settings)
    render = lambda name: ENV.get_template(name).render(values)  # noqa: E731
    return {
        "kind": kind,
        "to": event["email"].strip(),
        "subject": " ".join(render(f"{kind}.subject.j2").split()),
        "text": render(f"{kind}.txt.j2"),
        "html": render(f"{kind}.html.j2"),
        "ics": fold_ics(render("appointment.ics.j2")) if kind == "confirmation" else None,
    }


def to_mime(message, sender, message_id):
    """An RFC 5322 message: text and HTML alternatives, the .ics attached.

    Built with the compat32 email.mime classes: the same message as EmailMessage gives, at
    less than half the CPU, which is what bounds messages per second.
    """
    mime = MIMEMultipart("mixed")
    name, address = parseaddr(sender)
    mime["From"] = formataddr((name, address), charset="utf-8")
    mime["To"] = message["to"]
    mime["Subject"] = Header(message["subject"], "utf-8")
    mime["Date"] = format_datetime(utcnow())
    # stable per outbox record: a resend after a crash carries the same id, so mail clients
    # can recognise a duplicate
    mime["Message-ID"] = message_id
    mime["Auto-Submitted"] = "auto-generated"
    body = MIMEMultipart("alternative")
    body.attach(MIMEText(message["text"], "plain", "utf-8"))
    body.attach(MIMEText(message["html"], "html", "utf-8"))
    mime.attach(body)
    if message.get("ics"):
        calendar = MIMEText(message["ics"], "calendar", "utf-8")
        calendar.set_param("method", "PUBLISH")
        calendar.add_header("Content-Disposition", "attachment", filename="rendez-vous.ics")
        mime.attach(calendar)
    return mime


def message_id(key, domain):
    return f"<{key.replace(':', '.')}@{domain}>" if key else make_msgid(domain=domain)
