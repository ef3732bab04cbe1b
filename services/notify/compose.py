"""Turn a booking event into the message to send. All wording lives in templates/.

A message is written in two languages, one section each (`sections`): French then English, or,
for a person who used the pages in Arabic, Arabic (right to left) then French; the free-notice
warning (M5) leads in French first. Each section's wording is `t(fr, en)` as on the pages,
Arabic from the catalogue (services/common/i18n.py).
"""
import functools
import uuid
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from services.common import i18n
from services.common.i18n import LANGS
from services.common.ics import fold_ics, ics_text
from services.common.reference_data import PROCEDURES, SITES, WAIVER_RULE, documents
from services.common.timeutil import PARIS, long_date, parse_iso, utcnow

TEMPLATES = Path(__file__).parent / "templates"

KIND_FOR_EVENT = {"booking_created": "confirmation", "booking_confirmed": "confirmed",
                  "booking_cancelled": "cancellation", "booking_reminder_due": "reminder",
                  "attempt_recorded": "attempt_receipt", "request_filed": "request_filed",
                  "offer_made": "offer", "booking_restored": "restored",
                  "renewal_invitation": "invitation"}
# the confirmed appointment is the first message said again as final: the same templates
TEMPLATES_OF_KIND = {"confirmed": "confirmation"}
WITH_ICS = ("confirmation", "confirmed", "restored")


ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=lambda name: name is not None and ".html" in name,
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    # a line holding only a tag ({% for %}, {% if %}) adds no line to the plain text
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["ics"] = ics_text

# the languages of a message, by the language the person used: the first is theirs
MAIL_LANGS = {"fr": ("fr", "en"), "en": ("fr", "en"), "ar": ("ar", "fr")}
HEADINGS = {"fr": "FRANÇAIS", "en": "ENGLISH", "ar": "العربية"}


def _ics_time(value):
    return value.strftime("%Y%m%dT%H%M%SZ")


def _at(lang, day, time):
    return i18n.translate(lang, "%(date)s à %(time)s", "%(date)s at %(time)s") % {
        "date": long_date(day, lang), "time": time}


def _when(key, instant):
    """{key_fr, key_en, key_ar...}: an instant of the event in Paris time, in words; {} without one."""
    if not instant:
        return {}
    local = parse_iso(instant).astimezone(PARIS)
    return {f"{key}_{lang}": _at(lang, local, f"{local:%H:%M}") for lang in LANGS}


def _lang(event):
    return event.get("lang") if event.get("lang") in LANGS else i18n.DEFAULT


def _link(base, path, token, event):
    """A link to the pages with the token and the language the person used: the page puts
    both into cookies and redirects, so the pages answer in that language from then on."""
    return f"{base}{path}?token={token}&lang={_lang(event)}"


def _ltr_html(value):
    # a reference, an address or a number inside an Arabic sentence keeps its own order
    return Markup('<span dir="ltr">%s</span>') % value


def section(lang, values, html):
    """One language's part of a message: its wording (`t`), direction, and the values of
    `values` written `<name>_<lang>` under their plain name (date, procedure...)."""
    rtl = lang in i18n.RTL
    own = {key[:-len(lang) - 1]: value for key, value in values.items()
           if key.endswith(f"_{lang}")}
    t = functools.partial(i18n.translate, lang)
    if html:
        ltr = _ltr_html if rtl else escape
        # escaped text: `t(...)|format(name=ltr(...))` keeps the span and escapes the rest
        t = (lambda translate: lambda fr, en: escape(translate(fr, en)))(t)
    else:
        ltr = i18n.isolate if rtl else str
    return dict(own, lang=lang, dir=i18n.direction(lang), heading=HEADINGS[lang], t=t, ltr=ltr,
                waiver_rule=i18n.pick(WAIVER_RULE, lang))


def _procedure(event, procedure):
    """procedure_fr, procedure_en, procedure_ar...: the procedure's label in each language."""
    if not procedure:
        return {f"procedure_{lang}": event["procedure"] for lang in LANGS}
    return {f"procedure_{lang}": i18n.translate(lang, procedure["label_fr"], procedure["label_en"])
            for lang in LANGS}


def context(event, settings, confirmed=False):
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
        **_procedure(event, procedure),
        **{f"walk_in_{lang}": i18n.pick(procedure["walk_in"], lang)
           for lang in LANGS if procedure.get("walk_in")},
        "walk_in": procedure.get("walk_in"),
        "site_label": site["label"],
        "site_address": site["address"],
        **{f"date_{lang}": long_date(local, lang) for lang in LANGS},
        "time": local.strftime("%H:%M"),
        "manage_url": _link(base, f"/bookings/{event['reference']}", token, event) if token else base,
        "convocation_url": (_link(base, f"/bookings/{event['reference']}/convocation", token, event)
                            if token else base),
        # a page with a button: a mail client fetching the link ahead does not confirm
        "confirm_url": (_link(base, f"/bookings/{event['reference']}/confirm", event["confirm_token"],
                              event) if event.get("confirm_token") else base),
        # booking_created says until when (booking decides); none: it never lapses
        **_when("confirm_by", event.get("confirm_by")),
        # booking_confirmed: the e-mail says it is final and carries the convocation
        "confirmed": confirmed,
        # an accepted offer (issue 12) is born confirmed
        "offered": bool(event.get("offer_id")),
        "reason": event.get("reason"),
        "report_url": settings["report_url"],
        "report_email": settings["report_email"],
        "mail_domain": settings["mail_domain"],
        "dtstamp": _ics_time(parse_iso(event["occurred_at"])),
        "dtstart": _ics_time(start),
        "dtend": _ics_time(parse_iso(event["slot_end"])),
    }


def reminder_context(event, settings):
    """The reminder two working days before (issue 21): the booking's context, the documents
    to bring, and "I can no longer come": the applicant pages' cancel step (a page with a
    button: a mail client fetching the link ahead cancels nothing)."""
    values = context(event, settings, confirmed=True)
    base = settings["public_base_url"].rstrip("/")
    values.update(cancel_url=_link(base, f"/bookings/{event['reference']}/cancel", event["token"],
                                   event),
                  **{f"documents_{lang}": documents(event["procedure"], lang) for lang in LANGS})
    return values


def attempt_context(event, settings):
    """The receipt of a recorded failed attempt (M7): when, for what, and the link to the file."""
    at = parse_iso(event["recorded_at"]).astimezone(PARIS)
    procedure = PROCEDURES.get(event["procedure"], {})
    base = settings["public_base_url"].rstrip("/")
    return {
        "reference": event["reference"],
        **_procedure(event, procedure),
        "foreigner_number": event.get("foreigner_number"),
        **{f"date_{lang}": long_date(at, lang) for lang in LANGS},
        "time": at.strftime("%H:%M"),
        "token": event["token"],
        # the pages (the JSON API stays for programs): the first puts the token into a cookie
        "attestation_url": _link(base, f"/attempts/{event['reference']}/attestation", event["token"],
                                 event),
        "attestation_pdf_url": f"{base}/attempts/{event['reference']}/attestation.pdf?token={event['token']}",
        "verify_url": f"{base}/attestations/verify",
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
        **_procedure(event, procedure),
        "request_url": _link(base, f"/requests/{event['reference']}", token, event),
        "confirm_url": _link(base, f"/requests/{event['reference']}/confirm", token, event),
        "report_url": settings["report_url"],
        "report_email": settings["report_email"],
    }
    for key in ("confirm_by", "deadline", "slot_start"):
        values.update(_when(key, event.get(key)))
    if event.get("site"):
        site = SITES.get(event["site"], {"label": event["site"], "address": ""})
        values.update(site_label=site["label"], site_address=site["address"])
    return values


def invitation_context(event, settings):
    """A renewal invitation (issue 24): the permit's expiry and the link to the request form,
    pre-filled and already verified by the invitation's token."""
    procedure = PROCEDURES.get(event["procedure"], {})
    base = settings["public_base_url"].rstrip("/")
    lang = event.get("lang") if event.get("lang") in LANGS else "fr"
    expiry = datetime.fromisoformat(event["expiry"])
    return {
        "exact_name": f"{event['family_name'].upper()} {event['given_names']}".strip(),
        "procedure_fr": procedure.get("label_fr", event["procedure"]),
        "procedure_en": procedure.get("label_en", event["procedure"]),
        "expiry_fr": long_date(expiry, "fr"), "expiry_en": long_date(expiry, "en"),
        "invitation_url": (f"{base}/request/{event['procedure']}?invitation={event['invitation']}"
                           f"&token={event['token']}&lang={lang}"),
        "report_url": settings["report_url"],
        "report_email": settings["report_email"],
    }


def compose(event_type, event, settings):
    """The message for this event: kind, recipient, subject, text, html and .ics (or None)."""
    kind = KIND_FOR_EVENT[event_type]
    if event_type == "attempt_recorded":
        values = attempt_context(event, settings)
    elif event_type == "booking_reminder_due":
        values = reminder_context(event, settings)
    elif event_type in ("request_filed", "offer_made"):
        values = request_context(event, settings)
    elif event_type == "renewal_invitation":
        values = invitation_context(event, settings)
    else:
        values = context(event, settings,
                         confirmed=event_type in ("booking_confirmed", "booking_restored"))
    langs = MAIL_LANGS[_lang(event)]
    # the free notice (M5) in French first, then in the message's other language
    warning = ["fr"] + [lang for lang in langs if lang != "fr"]

    def render(name):
        html = ".html" in name
        return ENV.get_template(name).render(
            values, lang=langs[0], dir=i18n.direction(langs[0]),
            sections=[section(lang, values, html) for lang in langs],
            warnings=[section(lang, values, html) for lang in warning])

    templates = TEMPLATES_OF_KIND.get(kind, kind)
    return {
        "kind": kind,
        "to": event["email"].strip(),
        "subject": " ".join(render(f"{templates}.subject.j2").split()),
        "text": render(f"{templates}.txt.j2"),
        "html": render(f"{templates}.html.j2"),
        "ics": fold_ics(render("appointment.ics.j2")) if kind in WITH_ICS else None,
    }


def to_mime(message, sender, message_id):
    """An RFC 5322 message: text and HTML alternatives, the .ics attached.

    Built with the compat32 email.mime classes: the same message as EmailMessage gives, at
    less than half the CPU, which is what bounds messages per second.
    """
    # boundaries given here: left to the generator, each costs a regular expression compiled
    # for it and a scan of the whole message (a tenth of notify's CPU); a random one cannot
    # occur in the parts, which are quoted-printable or base64
    mime = MIMEMultipart("mixed", boundary=_boundary())
    name, address = parseaddr(sender)
    mime["From"] = formataddr((name, address), charset="utf-8")
    mime["To"] = message["to"]
    mime["Subject"] = Header(message["subject"], "utf-8")
    mime["Date"] = format_datetime(utcnow())
    # stable per outbox record: a resend after a crash carries the same id, so mail clients
    # can recognise a duplicate
    mime["Message-ID"] = message_id
    mime["Auto-Submitted"] = "auto-generated"
    body = MIMEMultipart("alternative", boundary=_boundary())
    body.attach(MIMEText(message["text"], "plain", "utf-8"))
    body.attach(MIMEText(message["html"], "html", "utf-8"))
    mime.attach(body)
    if message.get("ics"):
        calendar = MIMEText(message["ics"], "calendar", "utf-8")
        calendar.set_param("method", "PUBLISH")
        calendar.add_header("Content-Disposition", "attachment", filename="rendez-vous.ics")
        mime.attach(calendar)
    return mime


def _boundary():
    return f"=_{uuid.uuid4().hex}"


def message_id(key, domain):
    return f"<{key.replace(':', '.')}@{domain}>" if key else make_msgid(domain=domain)
