import html
import re
import smtplib
import uuid
from urllib.parse import parse_qs, urlsplit

import icalendar
import pytest

from services.common import contract
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
    # the deadline is the event's (booking decides it), in Paris time: notify reads no setting
    message = compose("booking_created", booking_event(confirm_token="link-only-token",
                                                       confirm_by="2027-02-01T10:15:00Z"),
                      SETTINGS)
    # the confirmation link carries its own token, not the booker's
    link = "https://rdv.example.fr/bookings/RDV-AB12-CD34/confirm?token=link-only-token"
    for body in (message["text"], message["html"]):
        assert link in body and "/confirm?token=secret-token" not in body
        assert "pas encore définitif" in body.replace("PAS ENCORE DÉFINITIF", "pas encore définitif")
        assert "not final yet" in body.replace("NOT FINAL YET", "not final yet")
        assert "1 février 2027 à 11:15" in body and "1 February 2027 at 11:15" in body
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
    ("multiple_bookings_same_person", "un rendez-vous par personne", "one appointment per person"),
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


@pytest.mark.parametrize("lang", ["fr", "en", "ar"])
@pytest.mark.parametrize("event_type", ["booking_created", "booking_confirmed"])
def test_the_smtp_policy_writes_the_bytes_compat32_writes(event_type, lang):
    # its short-header path skips email.header.Header: the result must not change, long,
    # non-ASCII and parameterised headers included
    from email.policy import compat32

    from services.notify.mailer import SMTP_LINES

    message = compose(event_type, booking_event(lang=lang, email="a." + "x" * 70 + "@example.org"),
                      SETTINGS)
    mime = to_mime(message, "Préfecture de police <no-reply@rdv.example.fr>", "<k@rdv.example.fr>")
    for length in (73, 74):  # "X-H: " and the value: 78 characters fit a line, 79 are folded
        mime["X-H"] = ("word " * 20)[:length]
    assert mime.as_bytes(policy=SMTP_LINES) == mime.as_bytes(policy=compat32.clone(linesep="\r\n"))


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


def test_the_confirmed_e_mail_says_it_is_final_with_the_convocation_and_the_ics():
    event = booking_event(name="booking_confirmed", token="booking-token")
    message = compose("booking_confirmed", event, SETTINGS)
    assert message["kind"] == "confirmed"
    assert "confirmé" in message["subject"] and "confirmed" in message["subject"]
    assert "RDV-AB12-CD34" in message["subject"] and "confirmer /" not in message["subject"]
    convocation = "https://rdv.example.fr/bookings/RDV-AB12-CD34/convocation?token=booking-token"
    for body in (message["text"], message["html"]):
        assert convocation in body
        assert "CONFIRMÉ" in body.upper() and "CONFIRMED" in body.upper()
        assert "PAS ENCORE DÉFINITIF" not in body.upper() and "NOT FINAL YET" not in body.upper()
        assert "/confirm?token=" not in body  # nothing more to confirm
        assert "GRATUITS" in body and "FREE" in body
    calendar = icalendar.Calendar.from_ical(message["ics"])
    [vevent] = calendar.walk("VEVENT")
    # the same UID as the first message's: calendars update the one appointment
    assert str(vevent.get("uid")) == "RDV-AB12-CD34@rdv.example.fr"
    assert vevent.decoded("dtstart").isoformat() == "2027-03-04T08:30:00+00:00"
    # an accepted offer says so
    offered = compose("booking_confirmed", dict(event, offer_id="OFR-1"), SETTINGS)
    assert "accepté la place proposée" in offered["text"] and convocation in offered["text"]


def test_a_booking_born_confirmed_gets_its_one_message_from_booking_confirmed():
    offer = booking_event(offer_id="OFR-1")
    assert not rules.sends_message("booking_created", offer)
    assert rules.sends_message("booking_confirmed", booking_event(name="booking_confirmed",
                                                                  offer_id="OFR-1"))
    assert rules.sends_message("booking_created", booking_event())


@pytest.mark.parametrize("kind, event, counted", [
    # what anyone can make us send to any address: counted
    ("confirmation", booking_event(), True),
    ("attempt_receipt", {}, True),
    ("request_filed", {}, True),
    ("cancellation", booking_event(name="booking_cancelled", reason="not_confirmed"), True),
    ("cancellation", booking_event(name="booking_cancelled", reason="applicant"), True),
    # owed to the owner of the mailbox, who proved it: always sent
    ("confirmed", booking_event(name="booking_confirmed"), False),
    ("offer", {}, False),
    ("cancellation", booking_event(name="booking_cancelled", reason="applicant",
                                   was_confirmed=True), False),
    ("cancellation", booking_event(name="booking_cancelled", reason="slot_grabbing",
                                   was_confirmed=True), False),
    # the reminder two working days before a confirmed appointment (issue 21)
    ("reminder", {}, False),
])
def test_which_messages_count_against_the_address_daily_limit(kind, event, counted):
    assert rules.counts_against_limit(kind, event) is counted


def reminder_event(**overrides):
    """`booking_reminder_due` built through the bus contract."""
    start = "2027-03-04T08:30:00Z"
    return contract.build(
        "booking_reminder_due", event_id=str(uuid.uuid4()), occurred_at="2027-03-02T07:00:00Z",
        **dict({"reference": "RDV-AB12-CD34", "procedure": "renewal", "site": "montpellier",
                "slot_id": "abc", "slot_start": start, "slot_end": "2027-03-04T08:50:00Z",
                "email": "yasmine.benali@example.org", "token": "t",
                "identity": {"family_name": "Benali", "given_names": "Yasmine",
                             "birth_date": "1988-03-14"},
                "reminded_at": "2027-03-02T07:00:00Z"}, **overrides))


def _links(body):
    """The links to the pages in a message's text or HTML body (HTML entities undone)."""
    return re.findall(r"https://rdv\.example\.fr/[^\s\"<>]+", html.unescape(body))


@pytest.mark.parametrize("lang", ["fr", "en", "ar"])
def test_every_link_to_the_pages_opens_them_in_the_language_the_person_used(lang):
    request = {"reference": "REQ-AB12-CD34", "procedure": "renewal", "email": "a@example.org",
               "token": "secret-token", "lang": lang}
    messages = [
        compose("booking_created", booking_event(confirm_token="link-token", lang=lang), SETTINGS),
        compose("booking_confirmed", booking_event(name="booking_confirmed", token="t", lang=lang),
                SETTINGS),
        compose("booking_reminder_due", reminder_event(lang=lang), SETTINGS),
        compose("request_filed", dict(request, confirm_by="2027-03-04T08:30:00+00:00"), SETTINGS),
        compose("offer_made", dict(request, site="montpellier", slot_start="2027-03-04T08:30:00Z",
                                   deadline="2027-03-02T08:30:00Z"), SETTINGS),
    ]
    for message in messages:
        for body in (message["text"], message["html"]):
            links = _links(body)
            assert links, message["kind"]
            for link in links:
                query = parse_qs(urlsplit(link).query)
                assert query["lang"] == [lang], (message["kind"], link)
                assert query["token"] and "/api/" not in link


def test_an_event_without_a_language_links_to_the_french_pages():
    event = booking_event(confirm_token="link-token")
    event.pop("lang", None)
    for link in _links(compose("booking_created", event, SETTINGS)["text"]):
        assert link.endswith("&lang=fr"), link


def test_the_reminders_cancel_link_is_the_public_cancel_step():
    for body in (lambda m: m["text"], lambda m: m["html"]):
        links = _links(body(compose("booking_reminder_due", reminder_event(lang="en"), SETTINGS)))
        assert "https://rdv.example.fr/bookings/RDV-AB12-CD34/cancel?token=t&lang=en" in links


def every_kind(lang):
    """One message of every kind, for a person who used the pages in `lang`."""
    request = {"reference": "REQ-AB12-CD34", "procedure": "renewal", "email": "a@example.org",
               "token": "secret-token", "lang": lang}
    return [
        compose("booking_created", booking_event(confirm_token="c", confirm_by="2027-02-01T10:15:00Z",
                                                 lang=lang), SETTINGS),
        compose("booking_confirmed", booking_event(name="booking_confirmed", token="t", lang=lang,
                                                   procedure="renewal_10y"), SETTINGS),
        compose("booking_cancelled", booking_event(name="booking_cancelled", reason="name_mismatch",
                                                   lang=lang), SETTINGS),
        compose("booking_reminder_due", reminder_event(lang=lang), SETTINGS),
        compose("request_filed", dict(request, confirm_by="2027-03-04T08:30:00+00:00"), SETTINGS),
        compose("offer_made", dict(request, site="montpellier", slot_start="2027-03-04T08:30:00Z",
                                   deadline="2027-03-02T08:30:00Z"), SETTINGS),
        compose("attempt_recorded", contract.build(
            "attempt_recorded", event_id=str(uuid.uuid4()), occurred_at="2027-03-02T08:30:00Z",
            reference="ATT-AB12-CD34", procedure="renewal", email="a@example.org",
            foreigner_number="0123456789", recorded_at="2027-03-02T08:30:00Z", token="t",
            lang=lang), SETTINGS),
    ]


def test_every_kind_of_e_mail_in_arabic_right_to_left_then_french():
    """Issue 21: Arabic first for a person who used the Arabic pages, French after it (for the
    desk, for whoever helps them); the free notice (M5) French first, then Arabic."""
    kinds = set()
    for message in every_kind("ar"):
        kinds.add(message["kind"])
        text, page = message["text"], message["html"]
        assert page.startswith('<!DOCTYPE html>\n<html lang="ar" dir="rtl">'), message["kind"]
        ar, fr = page.index('<section lang="ar" dir="rtl">'), page.index('<section lang="fr" dir="ltr">')
        assert ar < fr and 'lang="en"' not in page, message["kind"]
        # the free notice: French first, then Arabic, before everything else
        free_fr = page.index("Les rendez-vous de la préfecture sont GRATUITS")
        free_ar = page.index("مواعيد المحافظة (\u2066préfecture\u2069) مجانية")
        assert free_fr < free_ar < ar
        assert text.index("GRATUITS") < text.index("مجانية") < text.index("=== العربية ===") \
            < text.index("=== FRANÇAIS ===")
        assert "ENGLISH" not in text
        arabic = text[text.index("=== العربية ==="):text.index("=== FRANÇAIS ===")]
        # the reference keeps its left-to-right order inside an Arabic sentence
        reference = "ATT-AB12-CD34" if message["kind"] == "attempt_receipt" else \
            "REQ-AB12-CD34" if message["kind"] in ("request_filed", "offer") else "RDV-AB12-CD34"
        assert f"\u2066{reference}\u2069" in arabic, message["kind"]
        assert f'<span dir="ltr">{reference}</span>' in page
        assert re.search("[\u0600-\u06ff]", message["subject"]) and reference in message["subject"]
    assert kinds == {"confirmation", "confirmed", "cancellation", "reminder", "request_filed",
                     "offer", "attempt_receipt"}


def test_arabic_e_mails_say_what_the_french_ones_say():
    created, confirmed, cancelled, reminder, *_ = every_kind("ar")
    assert "الخميس 4 مارس 2027، الساعة 09:30" in created["text"]  # the slot, Paris time
    assert "الاثنين 1 فبراير 2027، الساعة 11:15" in created["text"]  # confirm before
    assert "https://rdv.example.fr/bookings/RDV-AB12-CD34/confirm?token=c&lang=ar" in created["text"]
    assert "مرحبًا \u2066Yasmine Benali\u2069،" in created["text"]
    assert "BENALI Yasmine" in created["text"]
    # the walk-in rule (M6) and the documents, in Arabic
    assert "ما عدا يوم الأربعاء" in confirmed["text"]
    assert "جواز سفرك" in reminder["text"] and "\u2066RDV-AB12-CD34\u2069" in reminder["text"]
    assert "لم يكن مطابقًا لوثيقة الهوية" in cancelled["text"]  # the reason, in plain words
    assert "ما عدا" not in every_kind("fr")[1]["text"]  # French e-mails have no Arabic
    assert "Benali" in reminder["html"] and "<script" not in reminder["html"]


def test_names_are_escaped_in_arabic_html_too():
    message = compose("booking_created", booking_event(
        identity={"family_name": "<b>x</b>", "given_names": "A", "birth_date": "1990-01-01"},
        lang="ar"), SETTINGS)
    assert "<b>x" not in message["html"] and "&lt;b&gt;x" in message["html"]
    assert '<span dir="ltr">A &lt;b&gt;x&lt;/b&gt;</span>' in message["html"]


def test_an_unknown_language_on_an_event_is_refused_by_the_contract():
    with pytest.raises(contract.ContractError) as refused:
        contract.load("booking_created", booking_event(lang="de"))
    assert "lang" in refused.value.fields
