"""The request pages (issue 12) over real HTTP, in front of the real slots, booking and requests
services: the form and its errors, CSRF, the e-mail links (token into a cookie, out of the
address bar), confirm, an offer accepted, declined, lapsed, withdrawn, availability changed,
and each procedure's path (book or request) by its mode."""
import re
from datetime import date, datetime, timedelta, timezone
from html import unescape

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import replace_dependencies

from gateway.public.service import PublicGateway
from services.booking.service import BookingService
from services.common.errors import InvalidRequest
from services.requests.service import RequestsService
from services.slots.service import SlotsService
from tests.helpers import plan, wait_until
from tests.integration.conftest import FixedClock
from tests.pages.conftest import csrf_of

NO_FOLLOW = {"allow_redirects": False}
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]
PERSON = {"family_name": "Benali", "given_names": "Yasmine", "birth_date": "1988-03-14",
          "email": "yasmine.benali@example.org", "phone": "06 12 34 56 78",
          "foreigner_number": "0123456789", "permit_expiry": ""}


@pytest.fixture
def system(container_factory, config):
    """Gateway, slots, booking and requests (its clock the test's); renewals by request."""
    cfg = dict(config, REQUEST_TIMER_SECONDS=600, REQUEST_OFFER_HOURS=48)
    for cls in (PublicGateway, SlotsService, BookingService):
        container_factory(cls, cfg).start()
    clock = FixedClock()
    requests = container_factory(RequestsService, cfg)
    replace_dependencies(requests, clock=clock)
    requests.start()
    with ClusterRpcProxy(cfg, timeout=20) as rpc:
        rpc.requests.set_mode("renewal", "requests", by="chief")
        yield rpc, clock


class Watch:
    """Every answer the person's browser got: the token must never show in one after the
    e-mail link's own redirect."""

    def __init__(self, http):
        self.http, self.answers = http, []

    def __call__(self, method, path, **kwargs):
        answer = self.http.request(method, path, **dict(NO_FOLLOW, **kwargs))
        self.answers.append((method, path, answer))
        return answer

    def get(self, path, **kwargs):
        return self("GET", path, **kwargs)

    def post_form(self, page_path, action, data=None):
        """Open `page_path`, press its form posting to `action` (with the page's CSRF token)."""
        page = self.get(page_path)
        assert page.status_code == 200, page.text
        return self("POST", action, data=dict(data or {}, csrf_token=csrf_of(page.text)))

    def assert_token_never_shown(self, token):
        for method, path, answer in self.answers:
            assert token not in answer.text, (method, path)
            assert token not in answer.headers.get("Location", ""), (method, path)


def form_data(day_keys=("tuesday-morning",), sites=("montpellier",), **overrides):
    data = [(k, v) for k, v in dict(PERSON, **overrides).items()]
    return data + [("sites", s) for s in sites] + [("times", k) for k in day_keys]


def file(watch, bus_listener, **overrides):
    """File through the form; (reference, token from the request_filed event: the e-mail's)."""
    form = watch.get("/request/renewal")
    assert form.status_code == 200, form.text
    answer = watch("POST", "/request/renewal",
                   data=form_data(**overrides) + [("csrf_token", csrf_of(form.text))])
    assert answer.status_code == 200, answer.text
    assert "request_token" not in answer.headers.get("Set-Cookie", "")
    reference = re.search(r'id="request-reference">(REQ-[0-9A-Z]{4}-[0-9A-Z]{4})<', answer.text).group(1)
    _, event = bus_listener.wait_for(lambda t, p: p["reference"] == reference)
    return reference, event["token"], answer


def follow_link(watch, reference, token, tail=""):
    """The e-mail's link: a cookie for this request's pages and a 303 without the token."""
    answer = watch.get(f"/requests/{reference}{tail}?token={token}")
    assert answer.status_code == 303, answer.text
    assert answer.headers["Location"] == f"/requests/{reference}{tail}"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("request_token=") and f"Path=/requests/{reference}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    return watch.get(answer.headers["Location"])


def next_tuesday():
    today = date.today() + timedelta(days=2)
    return today + timedelta(days=(1 - today.weekday()) % 7 or 7)


def release_now(rpc, day, hours="09:00-10:30"):
    rpc.slots.create_from_plan(plan(days=1, start=day, hours=[hours], desks=1), release="schedule")
    for batch in rpc.slots.schedule_for(procedure="renewal")["batches"]:
        try:
            rpc.slots.reschedule(batch["id"], datetime.now(timezone.utc).isoformat())
        except InvalidRequest:  # its random instant came already
            pass


def test_the_form_shows_each_mistake_next_to_its_field_keeps_values_and_checks_csrf(
        system, http, bus):
    rpc, _ = system
    filed = bus("requests", "request_filed")
    watch = Watch(http)
    form = watch.get("/request/renewal")
    assert form.status_code == 200
    text = unescape(form.text)
    assert "tirage au sort" in text and "gratuit" in text and "Laissez vide si c'est votre premier titre" in text
    assert 'name="times" value="friday-afternoon"' in text and 'name="sites" value="beziers"' in text
    assert 'name="foreigner_number"' in text  # renewals need it
    token = csrf_of(form.text)

    # mistakes: a bad e-mail, a bad expiry date, nothing ticked for the week
    bad = watch("POST", "/request/renewal",
                data=form_data(day_keys=(), email="nope", permit_expiry="2031-02-31")
                + [("csrf_token", token)])
    assert bad.status_code == 400
    text = unescape(bad.text)
    for message in ("adresse électronique valide", "vraie date",
                    "Cochez au moins une demi-journée où vous pouvez venir."):
        assert message in text
    assert re.search(r'id="email-error">.*adresse électronique valide', text)
    assert 'value="Benali"' in text and 'value="nope"' in text  # the input kept
    assert re.search(r'value="montpellier" id="sites" checked', text)  # the box kept
    assert 'aria-invalid="true"' in text and "Traceback" not in text

    # in English, the same message in English
    english = watch("POST", "/request/renewal?lang=en",
                    data=form_data(email="nope") + [("csrf_token", token)])
    assert english.status_code == 400 and "Enter a valid e-mail address" in english.text

    # M4 before the draw: a placeholder is not a name
    placeholder = watch("POST", "/request/renewal?lang=fr", data=form_data(
        family_name="Test", given_names="Test") + [("csrf_token", token)])
    assert placeholder.status_code == 400
    assert "Écrivez votre vrai nom de famille" in unescape(placeholder.text)

    # no CSRF token, or a wrong one: 400, the input kept, nothing filed
    for csrf in ([], [("csrf_token", "forged")]):
        refused = watch("POST", "/request/renewal", data=form_data() + csrf)
        assert refused.status_code == 400
        assert "Le formulaire n'a pas été accepté" in unescape(refused.text)
        assert 'value="yasmine.benali@example.org"' in refused.text
    assert rpc.requests.counts()["by_procedure"] == {}

    # filed: the receipt says where the link went and by when; no token in it
    reference, request_token, receipt = file(watch, filed)
    text = unescape(receipt.text)
    assert "yasmine.benali@example.org" in text and "avant le" in text
    assert "la demande ne comptera pas" in text
    assert rpc.requests.counts()["by_procedure"] == {"renewal": {"unconfirmed": 1}}

    # a second request on the same e-mail: filed too, an unconfirmed request claims nothing
    # (test_a_confirmed_request_holds_its_e_mail_against_the_others)
    second, _, _ = file(watch, filed, foreigner_number="9999999999")
    assert second != reference

    # wrong or missing tokens: the not-found page
    assert follow_link(watch, reference, "wrong-token").status_code == 404
    stranger = Watch(type(http)())
    assert stranger.get(f"/requests/{reference}").status_code == 404
    assert stranger.get(f"/requests/{reference}?token=").status_code == 404
    assert stranger.get("/requests/REQ-nope?token=x").status_code == 404
    assert stranger.get(f"/requests/{reference}?token={'x' * 300}").status_code == 404
    for action in ("confirm", "accept", "decline", "withdraw", "availability"):
        assert stranger("POST", f"/requests/{reference}/{action}", data={}).status_code == 404
    assert rpc.requests.get(reference, request_token)["state"] == "unconfirmed"
    watch.assert_token_never_shown(request_token)


def test_a_confirmed_request_holds_its_e_mail_against_the_others(system, http, bus):
    """Two requests on one e-mail: the one confirmed first counts; the other's confirmation
    shows why it is refused (409), and a new filing on that e-mail is refused at the form."""
    rpc, _ = system
    filed = bus("requests", "request_filed")
    mine, other = Watch(type(http)()), Watch(type(http)())
    reference, token, _ = file(mine, filed)
    stranger_ref, stranger_token, _ = file(other, filed, family_name="Martin",
                                           given_names="Paul", foreigner_number="0223456789")
    page = follow_link(mine, reference, token, "/confirm")
    confirmed = mine("POST", f"/requests/{reference}/confirm", data={"csrf_token": csrf_of(page.text)})
    assert confirmed.status_code == 303
    page = follow_link(other, stranger_ref, stranger_token, "/confirm")
    refused = other("POST", f"/requests/{stranger_ref}/confirm",
                    data={"csrf_token": csrf_of(page.text)})
    assert refused.status_code == 409
    text = unescape(refused.text)
    assert "Une autre demande est déjà confirmée" in text and "ne comptera pas" in text
    assert "Confirmer ma demande" in text  # still unconfirmed, shown as it is
    english = other("POST", f"/requests/{stranger_ref}/confirm?lang=en",
                    data={"csrf_token": csrf_of(page.text)})
    assert english.status_code == 409 and "Another request is already confirmed" in english.text
    assert rpc.requests.get(stranger_ref, stranger_token)["state"] == "unconfirmed"
    assert rpc.requests.get(reference, token)["state"] == "waiting"
    # a new request on that e-mail: the form again with the reason (409), no mail sent
    again = mine.post_form("/request/renewal", "/request/renewal",
                           dict(form_data(foreigner_number="9999999999")))
    assert again.status_code == 409
    text = unescape(again.text)
    assert "Vous avez déjà une demande en cours" in text
    assert re.search(r'id="email-error">.*Une demande confirmée est déjà en cours', text)
    # answered: whatever the refused filing published is on the bus, and it published nothing
    # (the earlier two's relay copies, if any, carry their own references)
    assert [e for _, e in filed.fenced() if e["reference"] not in (reference, stranger_ref)] == []
    mine.assert_token_never_shown(token)
    other.assert_token_never_shown(stranger_token)


def test_the_form_sent_twice_is_one_request_and_one_e_mail(system, http, bus, mongo):
    filed = bus("requests", "request_filed")
    form = http.get("/request/renewal")
    key = re.search(r'name="idempotency_key" value="([^"]+)"', form.text).group(1)
    data = form_data() + [("csrf_token", csrf_of(form.text)), ("idempotency_key", key)]
    first = http.post("/request/renewal", data=data, **NO_FOLLOW)
    again = http.post("/request/renewal", data=data, **NO_FOLLOW)  # a second click, a resend
    assert first.status_code == again.status_code == 200, again.text
    reference = re.compile(r'id="request-reference">(REQ-[0-9A-Z]{4}-[0-9A-Z]{4})<')
    assert reference.search(first.text).group(1) == reference.search(again.text).group(1)
    assert [r["_id"] for r in mongo("requests")["requests"].find()] == [
        reference.search(first.text).group(1)]
    # both answered: all they published is on the bus, one event (relay copies share its id)
    assert len({e["event_id"] for _, e in filed.fenced()}) == 1  # one e-mail


def test_each_procedure_shows_its_own_path(system, http):
    rpc, _ = system
    modes = rpc.slots.modes()
    assert modes["renewal"] == "requests" and modes["first_application"] == "open"
    assert set(modes) == {"first_application", "renewal", "renewal_10y", "change_of_status",
                          "duplicate"}
    listing = http.get("/book").text
    assert 'href="/request/renewal"' in listing and 'href="/book/renewal"' not in listing
    assert 'href="/book/first_application"' in listing
    assert 'href="/request/first_application"' not in listing
    for path in ("/book/renewal", "/book/renewal/montpellier", "/book/renewal/montpellier/x"):
        answer = http.get(path, **NO_FOLLOW)
        assert (answer.status_code, answer.headers.get("Location")) == (303, "/request/renewal"), path
    posted = http.post("/book/renewal/montpellier/x", data={}, **NO_FOLLOW)
    assert (posted.status_code, posted.headers["Location"]) == (303, "/request/renewal")
    answer = http.get("/request/first_application", **NO_FOLLOW)
    assert (answer.status_code, answer.headers["Location"]) == (303, "/book/first_application")
    assert http.get("/request/nothing").status_code == 404
    # switched back: booked directly again
    rpc.requests.set_mode("renewal", "open", by="chief")
    assert http.get("/book/renewal", **NO_FOLLOW).status_code == 200
    assert http.get("/request/renewal", **NO_FOLLOW).headers["Location"] == "/book/renewal"


def test_confirm_then_an_offer_accepted_declined_lapsed_withdrawn_and_availability_changed(
        system, http, bus):
    rpc, clock = system
    filed = bus("requests", "request_filed")
    day = next_tuesday()
    people = {}
    for name, family, number, expiry in (("accept", "Diallo", "0123456780", 5),
                                         ("decline", "Nguyen", "0123456781", 10),
                                         ("lapse", "Haddad", "0123456782", 20),
                                         ("change", "Mensah", "0123456783", 30)):
        browser = Watch(type(http)())
        reference, token, _ = file(browser, filed, family_name=family, foreigner_number=number,
                                   email=f"{family.lower()}@example.org",
                                   permit_expiry=(date.today() + timedelta(days=expiry)).isoformat())
        people[name] = (browser, reference, token)

    # the confirmation link: GET shows a button and confirms nothing (mail scanners fetch it)
    for name, (browser, reference, token) in people.items():
        page = follow_link(browser, reference, token, "/confirm")
        assert page.status_code == 200
        assert "Confirmer ma demande" in page.text
        assert rpc.requests.get(reference, token)["state"] == "unconfirmed"
        confirmed = browser("POST", f"/requests/{reference}/confirm",
                            data={"csrf_token": csrf_of(page.text)})
        assert (confirmed.status_code, confirmed.headers["Location"]) == \
            (303, f"/requests/{reference}?confirmed=1")
        assert rpc.requests.get(reference, token)["state"] == "waiting"
        page = browser.get(confirmed.headers["Location"])
        assert "confirmée et en attente" in unescape(page.text)

    # availability: a mistake shown in the form, then Mensah can come only on Friday afternoons
    browser, reference, token = people["change"]
    page = browser.get(f"/requests/{reference}")
    assert re.search(r'value="tuesday-morning" id="times-tuesday-morning" checked', page.text)
    wrong = browser("POST", f"/requests/{reference}/availability",
                    data={"csrf_token": csrf_of(page.text), "sites": "montpellier"})
    assert wrong.status_code == 400
    assert "Cochez au moins une demi-journée" in unescape(wrong.text)
    assert re.search(r'value="montpellier" id="sites" checked', wrong.text)
    no_csrf = browser("POST", f"/requests/{reference}/availability",
                      data={"sites": "beziers", "times": "friday-afternoon"})
    assert no_csrf.status_code == 400
    assert rpc.requests.get(reference, token)["availability"]["sites"] == ["montpellier"]
    saved = browser("POST", f"/requests/{reference}/availability",
                    data=[("csrf_token", csrf_of(page.text)), ("sites", "montpellier"),
                          ("times", "friday-afternoon")])
    assert (saved.status_code, saved.headers["Location"]) == (303, f"/requests/{reference}?saved=1")
    assert rpc.requests.get(reference, token)["availability"]["times"] == [
        {"weekday": "friday", "from": "13:00", "to": "18:00"}]
    page = browser.get(saved.headers["Location"])
    assert "disponibilités sont enregistrées" in unescape(page.text)
    assert 'value="friday-afternoon" id="times-friday-afternoon" checked' in page.text
    assert 'value="tuesday-morning" id="times-tuesday-morning" checked' not in page.text

    # three places on Tuesday morning: offered to the three who can come then
    release_now(rpc, day)
    offered = ("accept", "decline", "lapse")
    assert wait_until(lambda: all(rpc.requests.get(people[n][1], people[n][2])["state"] == "offered"
                                  for n in offered), timeout=20)
    browser, reference, token = people["accept"]
    page = browser.get(f"/requests/{reference}")
    text = unescape(page.text)
    assert "Une place vous est proposée" in text and "Répondez avant le" in text
    assert "34 place des Martyrs de la Résistance" in text and "mardi" in text
    assert "Accepter ce rendez-vous" in text and "Refuser" in text

    # accept without CSRF: nothing happens
    assert browser("POST", f"/requests/{reference}/accept", data={}).status_code == 400
    assert rpc.requests.get(reference, token)["state"] == "offered"
    accepted = browser("POST", f"/requests/{reference}/accept", data={"csrf_token": csrf_of(page.text)})
    assert accepted.status_code == 303, accepted.text
    booking = re.fullmatch(r"/bookings/(RDV-[0-9A-Z]{4}-[0-9A-Z]{4})\?booked=1",
                           accepted.headers["Location"]).group(1)
    cookie = accepted.headers["Set-Cookie"]
    assert "booking_token=" in cookie and f"Path=/bookings/{booking}" in cookie
    shown = browser.get(accepted.headers["Location"])
    assert shown.status_code == 200 and booking in shown.text
    assert "Confirmé" in shown.text and "Diallo" in shown.text
    page = browser.get(f"/requests/{reference}")
    assert "Rendez-vous réservé" in unescape(page.text) and f'href="/bookings/{booking}"' in page.text
    assert "Retirer ma demande" not in page.text  # nothing to withdraw once booked

    # decline, through "are you sure"
    browser, reference, token = people["decline"]
    sure = browser.get(f"/requests/{reference}/decline")
    assert sure.status_code == 200 and "Refuser la place proposée ?" in unescape(sure.text)
    assert rpc.requests.get(reference, token)["state"] == "offered"
    declined = browser("POST", f"/requests/{reference}/decline", data={"csrf_token": csrf_of(sure.text)})
    assert (declined.status_code, declined.headers["Location"]) == (303, f"/requests/{reference}")
    assert rpc.requests.get(reference, token)["state"] == "waiting"
    # Mensah said Friday afternoons only: the declined place is not offered to them
    assert rpc.requests.get(people["change"][1], people["change"][2])["state"] == "waiting"
    again = browser("POST", f"/requests/{reference}/decline", data={"csrf_token": csrf_of(sure.text)})
    # sent again (a double click, a redelivery): one decline, the request's page as it stands
    assert (again.status_code, again.headers["Location"]) == (303, f"/requests/{reference}")
    assert rpc.requests.get(reference, token)["state"] == "waiting"

    # the deadline passed: the state page again, with the reason (not a 5xx)
    browser, reference, token = people["lapse"]
    page = browser.get(f"/requests/{reference}")
    clock.at = datetime.now(timezone.utc) + timedelta(hours=49)
    late = browser("POST", f"/requests/{reference}/accept", data={"csrf_token": csrf_of(page.text)})
    assert late.status_code == 409
    assert "La date limite est passée" in unescape(late.text)
    assert rpc.requests.get(reference, token)["state"] == "waiting"

    # withdraw, through a confirmation page
    sure = browser.get(f"/requests/{reference}/withdraw")
    assert sure.status_code == 200 and "Retirer votre demande ?" in unescape(sure.text)
    assert browser("POST", f"/requests/{reference}/withdraw", data={}).status_code == 400
    assert rpc.requests.get(reference, token)["state"] == "waiting"
    done = browser("POST", f"/requests/{reference}/withdraw", data={"csrf_token": csrf_of(sure.text)})
    assert (done.status_code, done.headers["Location"]) == (303, f"/requests/{reference}")
    assert rpc.requests.get(reference, token)["state"] == "withdrawn"
    page = browser.get(f"/requests/{reference}")
    assert "Vous avez retiré cette demande" in unescape(page.text)
    assert 'action="/requests/' not in page.text  # no form left to change it

    for browser, reference, token in people.values():
        browser.assert_token_never_shown(token)


def test_a_request_filed_in_english_gets_e_mails_whose_links_open_the_english_pages(
        system, http, bus):
    from tests.pages.test_pages_http import e_mail_links

    rpc, _ = system
    filed, offers = bus("requests", "request_filed"), bus("requests", "offer_made")
    mailed = bus("requests", "request_filed")  # file() takes its event from `filed`
    confirmed = bus("booking", "booking_confirmed")
    watch = Watch(http)
    watch.get("/", params={"lang": "en"})  # chosen once, kept in a cookie
    reference, token, receipt = file(watch, filed)
    assert '<html lang="en">' in receipt.text
    _, event = mailed.wait_for(lambda t, p: p["reference"] == reference)
    assert event["lang"] == "en"
    # the confirmation link, opened where the mail is read (no cookie yet): English pages
    [link] = {link for link in e_mail_links("request_filed", event, "http://pages.example")
              if "/confirm?" in link}
    reader = Watch(type(http)())
    opened = reader.get(link)
    assert opened.status_code == 303 and opened.headers["Location"] == f"/requests/{reference}/confirm"
    page = reader.get(opened.headers["Location"])
    assert '<html lang="en">' in page.text and "Confirm my request" in page.text
    reader("POST", f"/requests/{reference}/confirm", data={"csrf_token": csrf_of(page.text)})
    assert rpc.requests.get(reference, token)["state"] == "waiting"
    # the offer's e-mail and the booking its acceptance makes carry the request's language
    release_now(rpc, next_tuesday())
    _, offer = offers.wait_for(lambda t, p: p["reference"] == reference, timeout=20)
    assert offer["lang"] == "en"
    assert all("lang=en" in link for link in e_mail_links("offer_made", offer, "http://x"))
    page = reader.get(f"/requests/{reference}")
    accepted = reader("POST", f"/requests/{reference}/accept", data={"csrf_token": csrf_of(page.text)})
    assert accepted.status_code == 303, accepted.text
    _, booking = confirmed.wait_for(lambda t, p: p.get("offer_id") == offer["offer_id"])
    assert booking["lang"] == "en"
