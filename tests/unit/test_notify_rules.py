import smtplib

import icalendar
import pytest

from services.notify import rules
from services.notify.compose import compose, fold_ics, ics_text, to_mime
from tests.helpers import booking_event

SETTINGS = {"public_base_url": "https://rdv.example.fr/", "report_url": "https://report.example",
            "report_email": "report@example.fr", "mail_domain": "rdv.example.fr"}


def test_idempotency_key_is_per_event_and_kind():
    assert rules.idempotency_key("e1", "confirmation") == rules.idempotency_key("e1", "confirmation")
    assert rules.idempotency_key("e1", "confirmation") != rules.idempotency_key("e1", "cancellation")
    assert rules.idempotency_key("e1", "confirmation") != rules.idempotency_key("e2", "confirmation")


def test_backoff_doubles_up_to_a_cap():
    assert [rules.backoff(n, 2, 60) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize("exc, transient", [
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (smtplib.SMTPServerDisconnected("gone"), True),
    (smtplib.SMTPDataError(451, b"try later"), True),
    (smtplib.SMTPDataError(554, b"rejected"), False),
    (smtplib.SMTPRecipientsRefused({"a@x": (450, b"busy")}), True),
    (smtplib.SMTPRecipientsRefused({"a@x": (550, b"no such user")}), False),
    (ValueError("bug"), False),
])
def test_transient_errors(exc, transient):
    assert rules.is_transient(exc) is transient


def test_connection_errors_are_told_apart_from_refusals():
    assert rules.is_connection_error(ConnectionRefusedError())
    assert not rules.is_connection_error(smtplib.SMTPDataError(451, b"later"))


def test_confirmation_warns_in_french_then_english_and_has_what_the_applicant_needs():
    message = compose("booking_created", booking_event(), SETTINGS)
    text, html = message["text"], message["html"]
    for body in (text, html):
        fr = body.index("Les rendez-vous de la préfecture sont GRATUITS")
        en = body.index("Appointments at the prefecture are FREE")
        assert "Personne n'a le droit de les vendre" in body or "Personne n&#39;a le droit" in body
        assert "Nobody is allowed to sell them" in body and "report.example" in body
        assert fr < en  # French first
    assert text.index("FRANÇAIS") < text.index("ENGLISH")
    assert "RDV-AB12-CD34" in message["subject"] and "RDV-AB12-CD34" in text
    assert "jeudi 4 mars 2027 à 09:30" in text and "Thursday 4 March 2027 at 09:30" in text
    assert "34 place des Martyrs de la Résistance" in text
    assert "BENALI Yasmine" in text  # the exact name to show at the desk
    assert "https://rdv.example.fr/bookings/RDV-AB12-CD34?token=secret-token" in text
    assert message["to"] == "yasmine.benali@example.org"


def test_the_first_e_mail_asks_for_confirmation_and_says_the_booking_is_not_final():
    message = compose("booking_created", booking_event(confirm_token="link-only-token"),
                      dict(SETTINGS, confirm_minutes=60))
    # the confirmation link carries its own token, not the booker's
    link = "https://rdv.example.fr/bookings/RDV-AB12-CD34/confirm?token=link-only-token"
    for body in (message["text"], message["html"]):
        assert link in body and "/confirm?token=secret-token" not in body
        assert "pas encore définitif" in body.replace("PAS ENCORE DÉFINITIF", "pas encore définitif")
        assert "not final yet" in body.replace("NOT FINAL YET", "not final yet")
        assert "60 minutes" in body
    assert "confirmer" in message["subject"] and "confirmed" in message["subject"]


def test_ics_is_valid_and_in_utc():
    message = compose("booking_created", booking_event(
        identity={"family_name": "D'Souza, Jr; Ünal", "given_names": "Anne-Marie",
                  "birth_date": "1990-01-01"}), SETTINGS)
    calendar = icalendar.Calendar.from_ical(message["ics"])
    event = calendar.walk("VEVENT")[0]
    assert event.decoded("dtstart").isoformat() == "2027-03-04T08:30:00+00:00"
    assert event.decoded("dtend").isoformat() == "2027-03-04T08:50:00+00:00"
    assert "D'SOUZA, JR; ÜNAL Anne-Marie" in str(event.get("description"))
    assert str(event.get("uid")) == "RDV-AB12-CD34@rdv.example.fr"
    assert all(len(line.encode()) <= 75 for line in message["ics"].split("\r\n"))


def test_ics_escaping_and_folding():
    assert ics_text("a,b;c\\d\ne") == "a\\,b\\;c\\\\d\\ne"
    folded = fold_ics("X:" + "é" * 100)
    assert all(len(line.encode()) <= 75 for line in folded.split("\r\n"))
    assert "".join(line[1:] if i else line for i, line in enumerate(folded.rstrip().split("\r\n"))) == "X:" + "é" * 100


def test_names_are_escaped_in_html():
    message = compose("booking_created", booking_event(
        identity={"family_name": "<script>x</script>", "given_names": "A", "birth_date": "1990-01-01"}),
        SETTINGS)
    assert "<script>" not in message["html"] and "&lt;script&gt;" in message["html"]


@pytest.mark.parametrize("reason, fr, en", [
    ("applicant", "annulé ce rendez-vous vous-même", "cancelled this appointment yourself"),
    ("multiple_bookings_same_email", "même adresse électronique", "same e-mail address"),
    ("name_not_exact", "nom exact", "exact name"),
    ("name_mismatch", "ne correspondait pas", "did not match"),
    ("staff", "La préfecture a annulé", "prefecture cancelled"),
    ("slot_grabbing", "automatisée", "automated"),
    ("not_confirmed", "pas été confirmé à temps", "not confirmed in time"),
    ("email_already_used", "une adresse par personne", "one address per person"),
])
def test_cancellation_gives_the_reason_in_plain_words(reason, fr, en):
    event = booking_event(name="booking_cancelled", reason=reason)
    message = compose("booking_cancelled", event, SETTINGS)
    assert fr in message["text"] and en in message["text"]
    assert "GRATUITS" in message["text"] and "FREE" in message["text"]
    assert message["ics"] is None
    assert "annulé" in message["subject"] and "cancelled" in message["subject"]


def test_mime_has_text_html_and_calendar():
    message = compose("booking_created", booking_event(), SETTINGS)
    mime = to_mime(message, "Préfecture <no-reply@rdv.example.fr>", "<k@rdv.example.fr>")
    types = [part.get_content_type() for part in mime.walk()]
    assert {"text/plain", "text/html", "text/calendar"} <= set(types)
    assert mime["Message-ID"] == "<k@rdv.example.fr>"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\r", "\n", "\r\n", "\x0b", "\x0c",
                                       "\x1c", "\x1d", "\x1e", "\x85"])
def test_no_name_can_add_a_line_to_the_ics(separator):
    """The names reach notify from the booking event: schema checks are not all of it."""
    evil = f"Benali{separator}X-INJECTED:evil{separator}END:VEVENT{separator}BEGIN:VEVENT"
    message = compose("booking_created", booking_event(
        identity={"family_name": evil, "given_names": f"Yasmine{separator}ATTENDEE:x",
                  "birth_date": "1990-01-01"}), SETTINGS)
    ics = message["ics"]
    lines = ics.split("\r\n")
    # every physical line is a property, a fold or the end: nothing starts with what a name had
    assert not any(line.startswith(("X-INJECTED", "END:VEVENT\\", "ATTENDEE")) for line in lines)
    assert lines.count("BEGIN:VEVENT") == 1 and lines.count("END:VEVENT") == 1
    assert "\u2028" not in ics and "\u2029" not in ics and "\x85" not in ics
    calendar = icalendar.Calendar.from_ical(ics)
    events = calendar.walk("VEVENT")
    assert len(events) == 1
    assert "X-INJECTED" not in events[0] and "ATTENDEE" not in events[0]
    assert set(events[0]) == {"UID", "DTSTAMP", "DTSTART", "DTEND", "SUMMARY", "LOCATION",
                              "DESCRIPTION"}
    # the name is still there, on one line, as text
    assert "BENALI\nX-INJECTED:EVIL" in str(events[0]["DESCRIPTION"])


def test_ics_text_escapes_every_line_break_and_drops_other_controls():
    assert ics_text("a\u2028b\u2029c\rd\r\ne\x85f") == "a\\nb\\nc\\nd\\ne\\nf"
    assert ics_text("a\x00b\x07c\x7fd\te") == "abcd\te"


def test_request_e_mails_link_to_the_request_pages_not_the_json_api():
    filed = compose("request_filed", {"reference": "REQ-AB12-CD34", "procedure": "renewal",
                                      "email": "a@example.org", "token": "secret-token",
                                      "confirm_by": "2027-03-04T08:30:00+00:00"}, SETTINGS)
    offer = compose("offer_made", {"reference": "REQ-AB12-CD34", "procedure": "renewal",
                                   "email": "a@example.org", "token": "secret-token",
                                   "site": "montpellier", "slot_start": "2027-03-04T08:30:00+00:00",
                                   "deadline": "2027-03-02T08:30:00+00:00"}, SETTINGS)
    page = "https://rdv.example.fr/requests/REQ-AB12-CD34?token=secret-token"
    confirm = "https://rdv.example.fr/requests/REQ-AB12-CD34/confirm?token=secret-token"
    for body in (filed["text"], filed["html"]):
        assert confirm in body and page in body
    for body in (offer["text"], offer["html"]):
        assert page in body
    for message in (filed, offer):
        assert "/api/" not in message["text"] + message["html"]
