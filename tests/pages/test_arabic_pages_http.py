"""Arabic pages over real HTTP (issue 21): right to left, the switch, the texts, the links of
the e-mails, and `lang` in the JSON API."""
import re
from html import unescape

from tests.pages.conftest import csrf_of, first_slot_path
from tests.pages.test_pages_http import NO_FOLLOW, book, booked_reference, e_mail_links


def test_the_pages_in_arabic_are_right_to_left_and_the_switch_offers_every_language(http, site):
    home = http.get("/", params={"lang": "ar"})
    assert home.status_code == 200
    assert '<html lang="ar" dir="rtl">' in home.text
    assert "lang=ar" in home.headers["Set-Cookie"]
    text = unescape(home.text)
    # the French term kept, in one piece and in its own direction
    assert "<h1>حجز موعد من أجل بطاقة الإقامة (\u2066titre\u00a0de\u00a0séjour\u2069)</h1>" in text
    assert "المواعيد مجانية" in text  # the free notice (M5), at the top, in Arabic
    assert text.index("المواعيد مجانية") < text.index("<h1>")
    # the language selector: every language, each named in itself, Arabic right to left
    assert 'href="/?lang=fr" lang="fr" hreflang="fr">FR – Français</a>' in text
    assert 'href="/?lang=en" lang="en" hreflang="en">EN – English</a>' in text
    assert 'href="/?lang=ar" lang="ar" hreflang="ar" dir="rtl" aria-current="true">AR – العربية</a>' in text
    # remembered: the next page without ?lang is Arabic
    procedures = unescape(http.get("/book").text)
    assert '<html lang="ar" dir="rtl">' in procedures and "ما هو إجراؤك؟" in procedures
    assert "تجديد بطاقة الإقامة" in procedures
    # back to French: left to right, and Arabic offered, written right to left
    french = unescape(http.get("/", params={"lang": "fr"}).text)
    assert '<html lang="fr">' in french
    assert 'href="/?lang=ar" lang="ar" hreflang="ar" dir="rtl">AR – العربية</a>' in french


def test_an_unknown_language_falls_back_to_french(http, site):
    page = http.get("/", params={"lang": "de"})
    assert page.status_code == 200 and '<html lang="fr">' in page.text
    assert "Set-Cookie" not in page.headers or "lang=" not in page.headers["Set-Cookie"]


def test_booking_in_arabic_form_errors_booking_page_and_the_e_mail_links(http, site, bus):
    created = bus("booking", "booking_created")
    http.get("/", params={"lang": "ar"})
    slot_path = first_slot_path(http)
    form = unescape(http.get(slot_path).text)
    assert '<html lang="ar" dir="rtl">' in form
    assert "اسم العائلة" in form and "البريد الإلكتروني" in form and "(اختياري)" in form
    # a mistake: the error in Arabic, next to its field, the input kept
    missing = book(http, slot_path, email="")
    assert missing.status_code == 400
    text = unescape(missing.text)
    assert "صحّح هذه النقاط:" in text
    assert "اكتب بريدك الإلكتروني: سيُرسل إليه الاستدعاء (\u2066convocation\u2069)." in text
    assert 'value="Benali"' in text
    # booked: the booking page in Arabic, the reference and the address isolated
    reference = booked_reference(book(http, slot_path))
    page = unescape(http.get(f"/bookings/{reference}?booked=1").text)
    assert '<html lang="ar" dir="rtl">' in page
    assert "<h1>موعدك</h1>" in page
    assert "هذا الحجز ليس نهائيًا بعد" in page  # booking's not_final, in Arabic
    assert f'<dd class="reference">{reference}</dd>' in page
    assert '<strong class="email">yasmine.benali@example.org</strong>' in page
    assert re.search(r"(الاثنين|الثلاثاء|الأربعاء|الخميس|الجمعة) \d{1,2} \S+ 20\d\d", page)
    # the language travels with the booking: the e-mail's links open the Arabic pages
    _, event = created.wait_for(lambda t, p: p["reference"] == reference)
    assert event["lang"] == "ar"
    [link] = {link for link in e_mail_links("booking_created", event, site) if "/confirm?" in link}
    assert link.endswith("&lang=ar")
    other = type(http)()
    opened = other.get(link, **NO_FOLLOW)
    assert opened.status_code == 303
    confirm = unescape(other.get(opened.headers["Location"]).text)
    assert '<html lang="ar" dir="rtl">' in confirm and "تأكيد موعدي" in confirm
    done = other.post(f"/bookings/{reference}/confirm", data={"csrf_token": csrf_of(confirm)},
                      **NO_FOLLOW)
    assert done.status_code == 303
    assert "موعدك مؤكَّد." in unescape(other.get(done.headers["Location"]).text)


def test_the_json_api_takes_ar_and_refuses_an_unknown_language(http, site):
    slots = http.get("/api/slots", params={"procedure": "renewal"}).json()["slots"]
    body = {"procedure": "renewal", "slot_id": slots[0]["id"], "family_name": "Haddad",
            "given_names": "Karim", "birth_date": "1985-06-01", "email": "karim.haddad@example.org",
            "foreigner_number": "0123456789"}
    refused = http.post("/api/bookings", json=dict(body, lang="de"))
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request" and "lang" in refused.json()["fields"]
    operator = http.post("/api/bookings", json=dict(body, lang={"$gt": ""}))
    assert operator.status_code == 400 and "lang" in operator.json()["fields"]
    made = http.post("/api/bookings", json=dict(body, lang="ar"))
    assert made.status_code == 201, made.text
    attempt = http.post("/api/attempts", json={"procedure": "duplicate", "email": "k@example.org",
                                               "lang": "xx"})
    assert attempt.status_code == 400 and "lang" in attempt.json()["fields"]


def test_procedures_have_their_arabic_label(http, site):
    procedures = http.get("/api/procedures").json()["procedures"]
    labels = {p["code"]: p["label_ar"] for p in procedures}
    assert labels["renewal"].startswith("تجديد بطاقة الإقامة")
    walk_in = next(p for p in procedures if p["code"] == "renewal_10y")["walk_in"]
    assert "الأربعاء" in walk_in["ar"]
