"""M7 over the pages: recording a failed attempt from /attempts/new, on the real gateway, slots
and booking services (renewals bookable at Montpellier, nothing for duplicates)."""
import re
import time
from html import unescape

from nameko.standalone.rpc import ClusterRpcProxy

from tests.pages.conftest import csrf_of

NO_FOLLOW = {"allow_redirects": False}
PERSON = {"procedure": "duplicate", "email": "amina.diallo@example.org",
          "foreigner_number": "0612345678"}


def record(http, procedure="duplicate", **overrides):
    form = http.get("/attempts/new", params={"procedure": procedure})
    assert form.status_code == 200, form.text
    data = dict(PERSON, procedure=procedure, csrf_token=csrf_of(form.text), **overrides)
    return http.post("/attempts/new", data=data, **NO_FOLLOW)


def attempts_of(config, email=PERSON["email"]):
    with ClusterRpcProxy(config, timeout=20) as rpc:
        return rpc.booking.attempts_of(email=email)["attempts"]


def wait_bookable(config, procedure):
    """The site fixture's slots open with the release timer's first run, just after it starts."""
    with ClusterRpcProxy(config, timeout=20) as rpc:
        deadline = time.monotonic() + 10
        while not rpc.slots.any_bookable(procedure):
            assert time.monotonic() < deadline, f"no {procedure} slot opened"
            time.sleep(0.1)


def test_the_form_preselects_the_procedure_and_says_what_the_record_is_for(http, site):
    page = http.get("/attempts/new", params={"procedure": "duplicate"})
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["Cache-Control"] == "no-store"
    text = unescape(page.text)
    assert re.search(r'<option value="duplicate" selected>', page.text)
    assert len(re.findall(r"<option [^>]*selected", page.text)) == 1
    assert "deux mois" in text and "pénalité" in text and "Personne n'a le droit de vendre" in text
    assert 'name="csrf_token"' in page.text and 'id="email"' in page.text
    assert 'id="foreigner_number"' in page.text
    assert "<script" not in page.text and "style=" not in page.text
    english = unescape(http.get("/attempts/new", params={"procedure": "renewal", "lang": "en"}).text)
    assert "two months after expiry" in english and "Nobody may sell appointments" in english
    assert '<option value="renewal" selected>' in english
    # an unknown procedure: nothing preselected, no error
    unknown = http.get("/attempts/new", params={"procedure": "nothing"})
    assert unknown.status_code == 200 and " selected" not in unknown.text


def test_a_post_without_its_csrf_token_records_nothing(http, site, config):
    http.get("/attempts/new")  # the csrf cookie, without the form's token
    refused = http.post("/attempts/new", data=PERSON, **NO_FOLLOW)
    assert refused.status_code == 400
    assert "Le formulaire n'a pas été accepté" in unescape(refused.text)
    assert 'value="amina.diallo@example.org"' in refused.text  # input kept
    forged = http.post("/attempts/new", data=dict(PERSON, csrf_token="forged"), **NO_FOLLOW)
    assert forged.status_code == 400
    # the positive sign: the same form with its token records one, and only that one
    recorded = record(http)
    assert recorded.status_code == 200, recorded.text
    assert len(attempts_of(config)) == 1


def test_field_errors_come_back_next_to_their_field_with_the_input_kept(http, site, config):
    page = record(http, email="not an address", foreigner_number="12ab")
    assert page.status_code == 400
    text = unescape(page.text)
    assert "Indiquez une adresse électronique valide" in text
    assert re.search(r'<p class="error" id="email-error">.*?</p>\s*<input id="email"[^>]*'
                     r'aria-invalid="true"', page.text, re.S)
    assert "Le numéro d'étranger compte exactement 10 chiffres" in text
    assert 'href="#email"' in page.text and 'href="#foreigner_number"' in page.text
    assert 'value="not an address"' in page.text and 'value="12ab"' in page.text
    assert '<option value="duplicate" selected>' in page.text
    assert "procedure-error" not in page.text
    assert record(http).status_code == 200  # then a good one goes through
    assert len(attempts_of(config)) == 1


def test_a_recorded_attempt_shows_its_receipt_without_the_token(http, site, config):
    response = record(http, foreigner_number="")
    assert response.status_code == 200, response.text
    text = unescape(response.text)
    reference = re.search(r'id="attempt-reference"><strong>(ATT-[0-9A-Z-]+)</strong>', text).group(1)
    assert "Votre tentative est enregistrée" in text and "heure de Paris" in text
    assert re.search(r"\d{1,2} \w+ \d{4}, \d\d:\d\d", text)  # date and time (Paris)
    assert "récépissé vient d'être envoyé" in text and "attestation signée" in text
    assert "token" not in response.url and "token" not in response.text.lower().replace("csrf_token", "")
    [stored] = attempts_of(config)
    assert stored["reference"] == reference and stored["procedure"] == "duplicate"


def test_places_bookable_says_so_and_links_to_them(http, site, config):
    wait_bookable(config, "renewal")
    page = record(http, procedure="renewal")
    assert page.status_code == 409
    text = unescape(page.text)
    assert "Des créneaux sont libres pour cette démarche" in text and "Rien n'a été enregistré" in text
    assert 'href="/book/renewal"' in page.text
    # from the slots of one site, the link goes back there
    form = http.get("/attempts/new", params={"procedure": "renewal", "site": "montpellier"})
    back = http.post("/attempts/new", data=dict(PERSON, procedure="renewal", site="montpellier",
                                                csrf_token=csrf_of(form.text)), **NO_FOLLOW)
    assert back.status_code == 409 and 'href="/book/renewal/montpellier"' in back.text
    assert record(http).status_code == 200  # a duplicate, with nothing free, is recorded
    assert [a["procedure"] for a in attempts_of(config)] == ["duplicate"]


def test_too_many_attempts_in_a_day_is_said_clearly(http, site, config):
    for _ in range(3):  # ATTEMPTS_PER_DAY's default
        assert record(http).status_code == 200
    refused = record(http)
    assert refused.status_code == 429
    assert "Assez de tentatives pour aujourd'hui" in unescape(refused.text)
    assert len(attempts_of(config)) == 3
