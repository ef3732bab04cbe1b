"""The applicant pages over real HTTP: CSRF, the token kept out of URLs, escaping, headers."""
import re
from html import unescape

import pytest
from icalendar import Calendar

from tests.helpers import confirm_token_of, scheduled_slot_id
from tests.pages.conftest import FORM, csrf_of, first_slot_path

NO_FOLLOW = {"allow_redirects": False}


def free_of(http, slot_path):
    """How many places the JSON API says the slot behind a form URL still has (0 if not listed)."""
    slot_id = slot_path.rsplit("/", 1)[1]
    slots = http.get("/api/slots", params={"procedure": "renewal", "per_page": 200}).json()["slots"]
    return next((s["free"] for s in slots if s["id"] == slot_id), 0)


def book(http, slot_path, **overrides):
    form = http.get(slot_path)
    assert form.status_code == 200, form.text
    return http.post(slot_path, data=dict(FORM, csrf_token=csrf_of(form.text), **overrides),
                     **NO_FOLLOW)


def booked_reference(response):
    assert response.status_code == 303, response.text
    found = re.fullmatch(r"/bookings/(RDV-[0-9A-Z]{4}-[0-9A-Z]{4})\?booked=1", response.headers["Location"])
    assert found, response.headers["Location"]
    return found.group(1)


def test_every_page_carries_the_strict_headers(http, site):
    slot_path = first_slot_path(http)
    reference = booked_reference(book(http, first_slot_path(http)))
    paths = ["/", "/book", "/book/renewal", "/book/renewal/montpellier", "/book/duplicate/beziers",
             slot_path, f"/bookings/{reference}", f"/bookings/{reference}/cancel",
             "/bookings/RDV-0000-0000", "/book/nothing"]
    for path in paths:
        page = http.get(path)
        assert page.headers["Content-Type"] == "text/html; charset=utf-8", path
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert page.headers["X-Content-Type-Options"] == "nosniff", path
        assert page.headers["Referrer-Policy"] == "no-referrer", path
        assert "<script" not in page.text and "style=" not in page.text, path  # nothing inline
        assert '<a class="skip" href="#main">' in page.text, path
    assert http.get("/book/nothing").status_code == 404
    css = http.get("/static/site.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")


def test_booking_through_the_form_sets_the_token_cookie_and_shows_the_confirmation(http, site,
                                                                                   mongo):
    slot_path = first_slot_path(http)
    response = book(http, slot_path)
    reference = booked_reference(response)
    cookie = response.headers["Set-Cookie"]
    assert f"booking_token=" in cookie and f"Path=/bookings/{reference}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # http base URL
    assert free_of(http, slot_path) == 0
    page = http.get(response.headers["Location"])
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    text = unescape(page.text)
    # pending until the owner of the mailbox confirms it from the e-mail's link
    assert reference in text and "pas encore définitif" in text
    assert f'href="/bookings/{reference}/cancel"' in text
    token = http.cookies.get("booking_token", path=f"/bookings/{reference}")
    # the cookie's token shows the booking but does not confirm it: the e-mail's link does
    page = http.get(f"/bookings/{reference}/confirm")
    refused = http.post(f"/bookings/{reference}/confirm", data={"csrf_token": csrf_of(page.text)})
    assert refused.status_code == 409 and "lien du courriel" in unescape(refused.text)
    assert http.post(f"/api/bookings/{reference}/confirm",
                     headers={"X-Booking-Token": token}).status_code == 409
    assert http.post(f"/api/bookings/{reference}/confirm", headers={
        "X-Booking-Token": confirm_token_of(mongo, reference)}).json()["status"] == "active"
    text = http.get(f"/bookings/{reference}").text
    assert "heure de Paris" in text and "34 place des Martyrs" in text
    assert 'href="https://www.openstreetmap.org/search?query=' in text
    assert f'href="/bookings/{reference}/convocation"' in text
    assert f'href="/bookings/{reference}/convocation.pdf"' in text
    assert f'href="/bookings/{reference}/calendar.ics"' in text
    assert f'href="/bookings/{reference}/cancel"' in text
    assert "justificatif de domicile" in text and "gratuits" in text
    assert "token" not in page.url


def test_the_calendar_file_holds_the_appointment(http, site):
    slot_path = first_slot_path(http)
    reference = booked_reference(book(http, slot_path))
    ics = http.get(f"/bookings/{reference}/calendar.ics")
    assert ics.status_code == 200 and ics.headers["Content-Type"].startswith("text/calendar")
    assert "attachment" in ics.headers["Content-Disposition"]
    event = Calendar.from_ical(ics.content).walk("VEVENT")[0]
    assert str(event["UID"]).startswith(reference)
    assert "Martyrs" in str(event["LOCATION"]) and event["DTEND"].dt > event["DTSTART"].dt
    assert "token" not in ics.text


def test_the_e_mail_link_moves_the_token_into_a_cookie_and_out_of_the_url(http, site):
    created = http.post("/api/bookings", json=dict(FORM, procedure="renewal",
                                                   slot_id=first_slot_path(http).rsplit("/", 1)[1])).json()
    reference, token = created["reference"], created["token"]
    http.cookies.clear()
    link = http.get(f"/bookings/{reference}", params={"token": token}, **NO_FOLLOW)
    assert link.status_code == 303 and link.headers["Location"] == f"/bookings/{reference}"
    assert link.headers["Content-Security-Policy"] and link.headers["Referrer-Policy"] == "no-referrer"
    cookie = link.headers["Set-Cookie"]
    assert cookie.startswith(f"booking_token={token};") and f"Path=/bookings/{reference}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = http.get(f"/bookings/{reference}", params={"token": token})  # followed, as a browser does
    assert page.status_code == 200 and page.url.endswith(f"/bookings/{reference}")
    assert token not in page.url and token not in page.text
    assert reference in page.text and "Benali" in page.text
    # the cookie is for this booking's pages only: the JSON API still wants the header
    assert http.get(f"/api/bookings/{reference}").status_code == 400
    # a wrong token in the cookie: the same "not found" as an unknown booking
    http.cookies.clear()
    http.cookies.set("booking_token", "x" * 43, path=f"/bookings/{reference}")
    wrong = http.get(f"/bookings/{reference}")
    assert wrong.status_code == 404 and "Introuvable" in wrong.text


def test_a_form_without_its_csrf_token_is_refused_and_kept(http, site):
    slot_path = first_slot_path(http)
    http.get(slot_path)  # the browser has its csrf cookie; the post lacks the form's token
    refused = http.post(slot_path, data=dict(FORM, family_name="Ndiaye"), **NO_FOLLOW)
    assert refused.status_code == 400
    assert "Le formulaire n'a pas été accepté" in unescape(refused.text)
    assert 'value="Ndiaye"' in refused.text  # the input kept
    assert free_of(http, slot_path) == 1  # nothing booked
    forged = http.post(slot_path, data=dict(FORM, csrf_token="forged"), **NO_FOLLOW)
    assert forged.status_code == 400 and free_of(http, slot_path) == 1
    # a token from another browser (another csrf cookie) does not pass either
    other = csrf_of(http.get(slot_path).text)
    http.cookies.clear()
    assert http.post(slot_path, data=dict(FORM, csrf_token=other), **NO_FOLLOW).status_code == 400
    # with its token the same form books
    booked_reference(book(http, slot_path))


def test_field_errors_come_back_next_to_their_field_with_the_input_kept(http, site):
    slot_path = first_slot_path(http)
    page = book(http, slot_path, email="not an address", birth_date="2999-01-01",
                family_name="<script>alert(1)</script>")
    assert page.status_code == 400
    text = page.text
    assert "Indiquez une adresse électronique valide" in text
    assert re.search(r'<p class="error" id="email-error">.*?</p>\s*<input id="email"[^>]*'
                     r'aria-describedby="email-error email-hint"[^>]*aria-invalid="true"', text, re.S)
    assert "La date de naissance ne peut pas être dans le futur" in text
    assert 'href="#email"' in text and 'href="#birth_date"' in text  # the summary links to them
    assert 'value="not an address"' in text and 'value="Yasmine"' in text
    assert "<script>alert(1)" not in text and 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in text
    assert "family_name-error" not in text  # that field was fine
    assert free_of(http, slot_path) == 1
    # the same mistakes in English
    english = book(http, slot_path + "?lang=en", email="")
    assert english.status_code == 400 and "Enter your e-mail address" in english.text
    assert '<html lang="en">' in english.text


def test_names_are_escaped_on_the_booking_page(http, site):
    reference = booked_reference(book(http, first_slot_path(http), family_name="<script>alert(1)</script>",
                                      given_names='"><img src=x onerror=alert(2)>'))
    page = http.get(f"/bookings/{reference}")
    assert page.status_code == 200
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<img" not in page.text and "&lt;img src=x" in page.text


def test_cancel_asks_first_and_needs_the_csrf_token(http, site):
    slot_path = first_slot_path(http)
    reference = booked_reference(book(http, slot_path))
    confirm = http.get(f"/bookings/{reference}/cancel")
    assert confirm.status_code == 200 and "Oui, annuler le rendez-vous" in confirm.text
    assert 'name="token"' not in confirm.text  # the booking token never goes in the form
    refused = http.post(f"/bookings/{reference}/cancel", data={}, **NO_FOLLOW)
    assert refused.status_code == 400 and "Rien n'est annulé" in unescape(refused.text)
    assert "À confirmer" in unescape(http.get(f"/bookings/{reference}").text)  # not cancelled
    done = http.post(f"/bookings/{reference}/cancel", data={"csrf_token": csrf_of(confirm.text)},
                     **NO_FOLLOW)
    assert done.status_code == 303 and done.headers["Location"] == f"/bookings/{reference}"
    page = http.get(f"/bookings/{reference}")
    assert "Ce rendez-vous est annulé" in page.text and "Vous l'avez annulé" in unescape(page.text)
    assert f"/bookings/{reference}/cancel" not in page.text
    # given back, yet not bookable at once: it returns at a random later instant (issue 8),
    # not to whoever let it go
    assert free_of(http, slot_path) == 0


def test_a_slot_taken_meanwhile_keeps_the_form_and_offers_the_times_still_free(http, site):
    slot_path = first_slot_path(http)
    form = http.get(slot_path)
    # someone else takes the last place between the form and its sending
    slot_id = slot_path.rsplit("/", 1)[1]
    assert http.post("/api/bookings", json=dict(FORM, procedure="renewal", slot_id=slot_id,
                                                email="other@example.org")).status_code == 201
    typed = dict(FORM, family_name="Nguyễn Thị", given_names="Lan", email="lan@example.org")
    taken = http.post(slot_path, data=dict(typed, csrf_token=csrf_of(form.text)), **NO_FOLLOW)
    assert taken.status_code == 409
    text = unescape(taken.text)
    assert "Ce créneau vient d'être pris" in text and "Vos informations sont conservées" in text
    for field, value in typed.items():  # what was typed, kept
        assert re.search(rf'<input id="{field}" name="{field}" [^>]*value="{re.escape(value)}"', text), field
    # the times still free here, the taken one not among them; the form posts to the site
    assert 'action="/book/renewal/montpellier"' in text
    choices = re.findall(r'<input type="radio" name="slot_id" value="([^"]+)" id="([^"]+)">', text)
    assert choices and slot_id not in [value for value, _ in choices]
    assert choices[0][1] == "slot_id"  # the summary's link lands on the first choice
    assert 'href="#slot_id"' in text and 'href="/book/renewal/montpellier"' in text
    # sent again without a time: the same form, with the reason next to the choices
    retry = http.post("/book/renewal/montpellier", data=dict(typed, csrf_token=csrf_of(taken.text)),
                      **NO_FOLLOW)
    assert retry.status_code == 400 and 'id="slot_id-error"' in retry.text
    assert 'value="Lan"' in retry.text
    # a time chosen: booked with the details as typed
    chosen = choices[0][0]
    done = http.post("/book/renewal/montpellier",
                     data=dict(typed, slot_id=chosen, csrf_token=csrf_of(retry.text)), **NO_FOLLOW)
    reference = booked_reference(done)
    page = unescape(http.get(f"/bookings/{reference}").text)
    assert "Nguyễn Thị Lan" in page and "lan@example.org" in page
    assert free_of(http, f"/book/renewal/montpellier/{chosen}") == 0
    # the English pages say it in English
    english = http.get(slot_path.rsplit("/", 1)[0] + f"/{choices[1][0]}", params={"lang": "en"})
    assert http.post("/api/bookings", json=dict(FORM, procedure="renewal", slot_id=choices[1][0],
                                                email="third@example.org")).status_code == 201
    taken = http.post(slot_path.rsplit("/", 1)[0] + f"/{choices[1][0]}",
                      data=dict(typed, email="x@example.org", csrf_token=csrf_of(english.text)),
                      **NO_FOLLOW)
    assert taken.status_code == 409 and "This slot has just been taken" in taken.text
    assert "Choose another time" in taken.text and 'value="x@example.org"' in taken.text


def test_a_slot_not_released_yet_is_answered_as_an_unknown_one(http, site, config):
    """The form's GET and POST tell nothing more of an unreleased slot than of an unknown id
    (they answered 409 "taken" for it, 404 for an unknown one)."""
    hidden, unknown = scheduled_slot_id(config), "0123456789abcdef"
    csrf = csrf_of(http.get(first_slot_path(http)).text)
    answers = {}
    for slot_id in (hidden, unknown):
        path = f"/book/renewal/montpellier/{slot_id}"
        shown = http.get(path)
        sent = http.post(path, data=dict(FORM, csrf_token=csrf), **NO_FOLLOW)
        answers[slot_id] = [(page.status_code, page.text.replace(slot_id, "SLOT"))
                            for page in (shown, sent)]
    assert [status for status, _ in answers[hidden]] == [404, 404]
    assert answers[hidden] == answers[unknown]


@pytest.mark.parametrize("services_config, why", [
    ({"UNCONFIRMED_PER_CLIENT": 1}, ("depuis cette connexion", "from this connection")),
    # a share so small that the release's bound is one place
    ({"UNCONFIRMED_RELEASE_SHARE": 0.01}, ("de cette mise en ligne", "of this release")),
], indirect=["services_config"])
def test_too_many_unconfirmed_shows_the_form_again_with_why(http, site, why):
    """Past a bound of unconfirmed bookings (from one address, in one release), the form comes
    back (429) with the input kept and what to do, in both languages; nothing was held."""
    booked_reference(book(http, first_slot_path(http)))  # pending: not confirmed yet
    slot_path = first_slot_path(http)
    places = free_of(http, slot_path)
    refused = book(http, slot_path, email="awa.diallo@example.org", family_name="Diallo")
    assert refused.status_code == 429, refused.text
    text = unescape(refused.text)
    assert "Trop de rendez-vous attendent leur confirmation" in text
    assert "Rien n'a été réservé" in text and 'value="awa.diallo@example.org"' in text
    assert why[0] in text
    assert free_of(http, slot_path) == places
    english = http.post(f"{slot_path}?lang=en", data=dict(
        FORM, email="awa.diallo@example.org", csrf_token=csrf_of(http.get(slot_path).text)),
        **NO_FOLLOW)
    assert english.status_code == 429
    assert "Too many bookings are waiting for their confirmation" in unescape(english.text)
    assert why[1] in unescape(english.text)


def test_a_second_booking_for_one_person_or_one_e_mail_is_told_on_the_form(http, site, mongo):
    """Issue 25: one person, one booking per procedure, whatever the e-mail; the form comes
    back with the refusal in French and English, what to do instead, and the input kept."""
    reference = booked_reference(book(http, first_slot_path(http)))
    assert http.post(f"/api/bookings/{reference}/confirm", headers={
        "X-Booking-Token": confirm_token_of(mongo, reference)}).json()["status"] == "active"
    slot_path = first_slot_path(http)
    again = book(http, slot_path, email="yasmine.new@example.org", family_name="BENALI")
    assert again.status_code == 409
    text = unescape(again.text)
    assert "Vous avez déjà un rendez-vous pour cette démarche" in text
    assert "annulez d'abord l'autre rendez-vous" in text and "réservez à nouveau" in text
    assert reference not in text  # nothing about the other booking
    assert 'value="yasmine.new@example.org"' in text and csrf_of(again.text)
    assert free_of(http, slot_path) == 1  # nothing was booked
    http.get("/book", params={"lang": "en"})  # in English from here on
    again = book(http, slot_path, email="yasmine.new@example.org")
    text = unescape(again.text)
    assert again.status_code == 409 and '<html lang="en">' in text
    assert "You already have an appointment for this procedure" in text and "then book again" in text
    # the same e-mail for someone else: told on the form too, not as "slot taken"
    other = book(http, slot_path, family_name="Diallo", given_names="Awa", foreigner_number="1111111111")
    assert other.status_code == 409
    text = unescape(other.text)
    assert "This e-mail address already has an appointment" in text
    assert "This slot has just been taken" not in text


def test_slots_by_day_with_the_walk_in_rule_above_them(http, site):
    page = http.get("/book/renewal_10y/montpellier").text
    walk_in = page.index("sauf le mercredi")
    first_slot = page.index('href="/book/renewal_10y/montpellier/')
    assert walk_in < first_slot
    days = re.findall(r'<h2 id="day-\d+">([^<]+)</h2>', page)
    assert len(days) >= 3 and days[0].split()[0] in ("lundi", "mardi", "mercredi", "jeudi", "vendredi")
    times = re.findall(r'class="time" href="[^"]+" aria-label="[^"]+">(\d\d:\d\d)</a>', page)
    assert times[:6] == ["09:00", "09:30", "10:00", "10:30", "11:00", "11:30"]
    assert "sauf le mercredi" not in http.get("/book/renewal/montpellier").text


def test_no_free_slot_says_so_without_promising_a_time(http, site):
    page = http.get("/book/duplicate/beziers")
    assert page.status_code == 200
    assert "Aucun créneau libre pour le moment" in page.text
    assert "moments choisis au hasard" in page.text
    english = http.get("/book/duplicate/beziers", params={"lang": "en"})
    assert "No free slot at the moment" in english.text


def test_the_no_free_slot_page_offers_to_record_an_attempt(http, site):
    page = http.get("/book/duplicate/beziers")
    assert 'id="attempts"' in page.text and "Enregistrer ma tentative" in page.text
    assert 'href="/attempts/new?procedure=duplicate&amp;site=beziers"' in page.text
    assert 'id="attempts"' not in http.get("/book/renewal/montpellier").text  # slots are free there


@pytest.mark.parametrize("gateway_config", [{"PUBLIC_ATTEMPTS_ENABLED": "false"}], indirect=True)
def test_the_attempt_section_can_be_turned_off(http, site):
    page = http.get("/book/duplicate/beziers")
    assert page.status_code == 200 and "Aucun créneau libre" in page.text
    assert 'id="attempts"' not in page.text


def test_the_language_switch_is_remembered(http, site):
    home = http.get("/")
    assert '<html lang="fr">' in home.text and 'href="/?lang=en" lang="en" hreflang="en">EN – English</a>' in home.text
    english = http.get("/book", params={"lang": "en"})
    assert '<html lang="en">' in english.text and "What is your procedure?" in english.text
    assert "lang=en" in english.headers["Set-Cookie"]
    assert "Choose a place" in http.get("/book/renewal").text  # the cookie, without ?lang
    # the switch keeps the page's own query
    assert 'href="/book/renewal/montpellier?page=2&amp;lang=fr"' in http.get(
        "/book/renewal/montpellier", params={"page": 2}).text
    assert '<html lang="fr">' in http.get("/", params={"lang": "fr"}).text


def test_home_page_shows_the_warning_and_where_to_report(http, site):
    home = http.get("/").text
    assert "Les rendez-vous sont gratuits" in home
    assert 'href="https://www.internet-signalement.gouv.fr"' in home
    assert 'href="mailto:pref-etrangers@herault.gouv.fr"' in home
    assert home.index("gratuits") < home.index("<h1>")  # before anything else on the page


@pytest.mark.parametrize("gateway_config", [{"PUBLIC_BASE_URL": "https://rdv.example.org"}],
                         indirect=True)
def test_cookies_are_secure_behind_https(http, site):
    slot_path = first_slot_path(http)
    form = http.get(slot_path)
    assert "Secure" in form.headers["Set-Cookie"]
    # a client only sends Secure cookies over https: hand this one back by hand
    binding = re.search(r"csrf_id=([^;]+)", form.headers["Set-Cookie"]).group(1)
    http.cookies.clear()
    response = http.post(slot_path, data=dict(FORM, csrf_token=csrf_of(form.text)),
                         headers={"Cookie": f"csrf_id={binding}"}, **NO_FOLLOW)
    booked_reference(response)
    assert "booking_token=" in response.headers["Set-Cookie"] and "Secure" in response.headers["Set-Cookie"]
    english = http.get("/", params={"lang": "en"})
    assert "Secure" in english.headers["Set-Cookie"]


def test_the_gateway_refuses_to_start_without_its_form_secret(container_factory, config):
    from nameko.exceptions import ConfigurationError

    from gateway.public.service import PublicGateway

    container = container_factory(PublicGateway, dict(config, PUBLIC_FORM_SECRET=None))
    with pytest.raises(ConfigurationError, match="PUBLIC_FORM_SECRET"):
        container.start()


def test_the_reminders_cancel_link_opens_the_confirmation_step(http, site):
    """Issue 21: "I can no longer come" in the reminder is /bookings/{ref}/cancel?token=…: one
    click shows the confirmation step (the token moved into the cookie, out of the address),
    the button cancels, and the place goes back like any freed place."""
    slot_path = first_slot_path(http)
    reference = booked_reference(book(http, slot_path))
    token = http.cookies.get("booking_token")
    http.cookies.clear()  # the reminder is opened in a mail client: no cookie yet
    link = http.get(f"/bookings/{reference}/cancel", params={"token": token}, **NO_FOLLOW)
    assert link.status_code == 303 and link.headers["Location"] == f"/bookings/{reference}/cancel"
    confirm = http.get(f"/bookings/{reference}/cancel")
    assert confirm.status_code == 200 and "Oui, annuler le rendez-vous" in confirm.text
    assert "À confirmer" in unescape(http.get(f"/bookings/{reference}").text)  # nothing yet
    done = http.post(f"/bookings/{reference}/cancel", data={"csrf_token": csrf_of(confirm.text)},
                     **NO_FOLLOW)
    assert done.status_code == 303
    assert "Ce rendez-vous est annulé" in http.get(f"/bookings/{reference}").text
    assert free_of(http, slot_path) == 0  # held back, re-released later (issue 8)


def e_mail_links(event_type, event, base):
    """The links to the pages in the e-mail notify composes for this event, relative to `base`."""
    from services.notify.compose import compose

    settings = {"public_base_url": base, "report_url": "https://report.example",
                "report_email": "r@example.fr", "mail_domain": "example.fr"}
    text = compose(event_type, event, settings)["text"]
    return [link[len(base):] for link in re.findall(rf"{re.escape(base)}/\S+", text)]


@pytest.mark.parametrize("lang, heading", [("en", "Your appointment"), ("fr", "Votre rendez-vous")])
def test_the_e_mail_links_open_the_pages_in_the_language_of_the_booking(http, site, bus, lang,
                                                                        heading):
    created = bus("booking", "booking_created")
    http.get("/", params={"lang": lang})  # the person chose the language once; a cookie keeps it
    reference = booked_reference(book(http, first_slot_path(http)))
    _, event = created.wait_for(lambda t, p: p["reference"] == reference)
    assert event["lang"] == lang
    # the confirmation link, opened in another browser (the mail app's, with no cookie)
    # (said in French, then in English: one link twice)
    [link] = {link for link in e_mail_links("booking_created", event, site) if "/confirm?" in link}
    other = type(http)()
    opened = other.get(link, **NO_FOLLOW)
    assert opened.status_code == 303 and opened.headers["Location"] == f"/bookings/{reference}/confirm"
    assert "token" not in opened.headers["Location"] and "lang" not in opened.headers["Location"]
    page = other.get(opened.headers["Location"])
    assert f'<html lang="{lang}">' in page.text and f"<h1>{heading}</h1>" in page.text


def test_the_page_after_booking_shows_where_the_e_mail_went(http, site, caplog):
    reference = booked_reference(book(http, first_slot_path(http), email="Y.Benali+rdv@Example.org"))
    page = http.get(f"/bookings/{reference}?booked=1")
    text = unescape(page.text)
    # the address as typed, in the box that says to open the e-mail
    banner = re.search(r'<div class="[^"]*\bbanner-pending" role="status">(.*?)</div>', text, re.S).group(1)
    assert '<strong class="email">Y.Benali+rdv@Example.org</strong>' in banner
    assert "Ce n'est pas votre adresse ?" in banner
    english = unescape(http.get(f"/bookings/{reference}", params={"lang": "en"}).text)
    assert "The confirmation link was sent to" in english and "Y.Benali+rdv@Example.org" in english
    assert "Benali+rdv" not in caplog.text  # never logged (nor in an address: it is posted)


def test_the_foreigner_number_field_brings_up_a_digit_keypad(http, site):
    form = http.get(first_slot_path(http)).text
    number = re.search(r'<input id="foreigner_number"[^>]*>', form).group(0)
    assert 'inputmode="numeric"' in number and "&#34;" not in number and "&quot;" not in number
    email = re.search(r'<input id="email"[^>]*>', form).group(0)
    assert 'spellcheck="false"' in email
    # the same on the request form's field (issue 12's page shares the macro)
    assert 'inputmode="numeric"' in http.get("/attempts/new").text
