"""M7 over the pages: recording a failed attempt from /attempts/new, on the real gateway, slots
and booking services (renewals bookable at Montpellier, nothing for duplicates)."""
import re
import time
from datetime import datetime
from html import unescape

import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.common.timeutil import PARIS
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


def test_the_form_sent_twice_is_one_attempt_and_the_same_receipt(http, site, config):
    form = http.get("/attempts/new", params={"procedure": "duplicate"})
    key = re.search(r'name="idempotency_key" value="([^"]+)"', form.text).group(1)
    data = dict(PERSON, csrf_token=csrf_of(form.text), idempotency_key=key)
    first = http.post("/attempts/new", data=data, **NO_FOLLOW)
    again = http.post("/attempts/new", data=data, **NO_FOLLOW)  # a second click, a resend
    assert first.status_code == again.status_code == 200, again.text
    reference = re.compile(r'id="attempt-reference"><strong>(ATT-[0-9A-Z-]+)</strong>')
    assert reference.search(first.text).group(1) == reference.search(again.text).group(1)
    assert [a["reference"] for a in attempts_of(config)] == [reference.search(first.text).group(1)]


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
    assert "adressez-vous au personnel de la préfecture" in unescape(refused.text)
    assert len(attempts_of(config)) == 3
    # another foreigner number on the same e-mail does not lift it
    assert record(http, foreigner_number="0699999999").status_code == 429
    assert len(attempts_of(config)) == 3


def test_in_requests_mode_the_page_says_the_request_is_the_evidence(http, site, config):
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.set_mode("duplicate", "requests")
    page = record(http)
    assert page.status_code == 409, page.text
    text = unescape(page.text)
    assert "Cette démarche est attribuée sur demande" in text and "Rien n'a été enregistré" in text
    assert "sa date de dépôt et les places qui vous sont proposées" in text
    assert 'href="/request/duplicate"' in page.text
    form = http.get("/attempts/new", params={"procedure": "duplicate", "lang": "en"})
    english = http.post("/attempts/new", data=dict(PERSON, csrf_token=csrf_of(form.text)),
                        **NO_FOLLOW)
    assert english.status_code == 409
    assert "This procedure is allocated by request" in unescape(english.text)
    assert "its filing date and the places offered to you" in unescape(english.text)
    assert attempts_of(config) == []


# -- the attestation (the receipt e-mail's links) and the public verify page -------------------

CODE = re.compile(r'id="attestation-code">([0-9A-Z]{4}(?:-[0-9A-Z]{4}){3})<')


def recorded(config, count=2, email=PERSON["email"]):
    """Attempts recorded as the form does; the receipt's (reference, token) of the last one
    (the token travels only in the e-mail: the RPC's answer stands in for it here)."""
    with ClusterRpcProxy(config, timeout=20) as rpc:
        answers = [rpc.booking.record_attempt(dict(PERSON, email=email)) for _ in range(count)]
    return answers


def attestation_page(http, reference, token):
    """The e-mail's link: the token into a cookie, then the page without it."""
    link = http.get(f"/attempts/{reference}/attestation", params={"token": token}, **NO_FOLLOW)
    assert link.status_code == 303, link.text
    assert link.headers["Location"] == f"/attempts/{reference}/attestation"
    cookie = link.headers["Set-Cookie"]
    assert f"Path=/attempts/{reference}" in cookie and "HttpOnly" in cookie
    page = http.get(link.headers["Location"], **NO_FOLLOW)
    assert page.status_code == 200, page.text
    return page


def pdf_text(content):
    import io

    from pypdf import PdfReader
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(content)).pages)


def test_the_receipt_link_opens_the_attestation_to_print_with_every_attempt(http, site, config):
    first, second = recorded(config)
    page = attestation_page(http, second["reference"], second["token"])
    assert page.headers["Cache-Control"] == "no-store"
    text = unescape(page.text)
    assert "Attestation de tentatives de prise de rendez-vous" in text
    for attempt in (first, second):
        at = datetime.fromisoformat(attempt["at"].replace("Z", "+00:00")).astimezone(PARIS)
        assert attempt["reference"] in text and f"{at:%H:%M}" in text  # Paris time
    assert "0612345678" in text and PERSON["email"] in text and "Duplicata" in text
    assert "heure de Paris" in text and "Enregistrez vos tentatives avant l'expiration" in text
    code = CODE.search(page.text).group(1)
    assert "<svg" in page.text and "Code de vérification" in text  # the QR and its title
    assert f'href="/attempts/{second["reference"]}/attestation.pdf"' in page.text
    assert 'href="/attestations/verify"' in page.text
    assert second["token"] not in page.text and "<script" not in page.text
    # viewed again: the same attestation, not a new one signed at every view
    again = http.get(f"/attempts/{second['reference']}/attestation")
    assert CODE.search(again.text).group(1) == code
    # in English, the same code
    english = unescape(http.get(f"/attempts/{second['reference']}/attestation?lang=en").text)
    assert "Attestation of booking attempts" in english and code in english
    assert "Record your attempts before your residence permit expires" in english
    # a new attempt: a new attestation listing it, with a new code
    [third] = recorded(config, count=1)
    newer = http.get(f"/attempts/{second['reference']}/attestation")
    assert third["reference"] in newer.text and CODE.search(newer.text).group(1) != code


def test_without_the_receipt_token_the_attestation_is_not_found(http, site, config):
    [attempt] = recorded(config, count=1)
    for path, params in ((f"/attempts/{attempt['reference']}/attestation", {"token": "x" * 43}),
                         (f"/attempts/{attempt['reference']}/attestation", {}),
                         (f"/attempts/{attempt['reference']}/attestation.pdf", {}),
                         ("/attempts/ATT-0000-0000/attestation.pdf", {"token": attempt["token"]})):
        answer = http.get(path, params=params)
        assert answer.status_code == 404, (path, answer.status_code)
        assert "0612345678" not in answer.text and "<html" in answer.text


def test_the_pdf_attestation_lists_the_attempts_and_the_code(http, site, config):
    first, second = recorded(config)
    code = CODE.search(attestation_page(http, first["reference"], first["token"]).text).group(1)
    pdf = http.get(f"/attempts/{first['reference']}/attestation.pdf")  # the page's cookie
    assert pdf.status_code == 200
    assert pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.headers["Cache-Control"] == "no-store"
    text = pdf_text(pdf.content)
    for attempt in (first, second):
        at = datetime.fromisoformat(attempt["at"].replace("Z", "+00:00")).astimezone(PARIS)
        assert f"{at:%d/%m/%Y %H:%M}" in text and attempt["reference"] in text
    assert code in text and "0612345678" in text and "Duplicata" in text
    assert "Enregistrez vos tentatives avant" in " ".join(text.split())
    # the e-mail's PDF link carries the token itself
    direct = requests.get(f"{site}/attempts/{first['reference']}/attestation.pdf",
                          params={"token": first["token"]}, timeout=30)
    assert direct.status_code == 200 and code in pdf_text(direct.content)


def test_the_verify_page_says_a_good_code_is_valid_and_what_it_attests(http, site, config):
    first, second = recorded(config)
    code = CODE.search(attestation_page(http, first["reference"], first["token"]).text).group(1)
    stranger = requests.Session()  # anyone: no cookie of the applicant's
    form = stranger.get(f"{site}/attestations/verify", timeout=30)
    assert form.status_code == 200 and '<form method="get" action="/attestations/verify"' in form.text
    answer = stranger.get(f"{site}/attestations/verify", params={"code": code.lower().replace("-", " ")},
                          timeout=30)
    assert answer.status_code == 200
    text = unescape(answer.text)
    assert "Attestation valide." in text
    assert first["reference"] in text and second["reference"] in text
    # the person masked: whoever guesses a code learns no number and no address
    assert "se termine par 678" in text and "a…@example.org" in text
    assert "0612345678" not in text and PERSON["email"] not in text
    assert f'value="{code.lower().replace("-", " ")}"' in answer.text  # the input kept
    english = unescape(stranger.get(f"{site}/attestations/verify",
                                    params={"code": code, "lang": "en"}, timeout=30).text)
    assert "Valid attestation." in english and "What it attests" in english


def test_the_verify_page_refuses_a_wrong_code_and_a_malformed_one(http, site, config):
    [attempt] = recorded(config, count=1)
    code = CODE.search(attestation_page(http, attempt["reference"], attempt["token"]).text).group(1)
    wrong = code[:-1] + ("0" if code[-1] != "0" else "1")
    answer = http.get("/attestations/verify", params={"code": wrong})
    assert answer.status_code == 404
    text = unescape(answer.text)
    assert "Aucune attestation ne correspond à ce code" in text and attempt["reference"] not in text
    # any code not on record gets the very same answer
    other = http.get("/attestations/verify", params={"code": "0000-0000-0000-0000"})
    assert other.status_code == 404
    assert unescape(other.text).replace("0000-0000-0000-0000", wrong) == text
    malformed = http.get("/attestations/verify", params={"code": "ABC-123"})
    assert malformed.status_code == 400
    assert re.search(r'<p class="error" id="code-error">.*?16 lettres et chiffres.*?</p>\s*'
                     r'<input id="code"[^>]*aria-invalid="true"', unescape(malformed.text), re.S)
    assert 'value="ABC-123"' in malformed.text and 'href="#code"' in malformed.text


def test_the_verify_page_refuses_a_tampered_attestation(http, site, config, mongo):
    [attempt] = recorded(config, count=1)
    code = CODE.search(attestation_page(http, attempt["reference"], attempt["token"]).text).group(1)
    assert "Attestation valide." in unescape(http.get("/attestations/verify", params={"code": code}).text)
    # an attempt moved back a week in the record kept under the code: the signature breaks
    issued = mongo("booking").attestations.find_one({"_id": code})
    moved = dict(issued["attestation"]["attempts"][0], at="2020-01-01T09:00:00Z")
    mongo("booking").attestations.update_one({"_id": code}, {"$set": {"attestation.attempts": [moved]}})
    answer = http.get("/attestations/verify", params={"code": code})
    text = unescape(answer.text)
    assert answer.status_code == 200
    assert "Attestation non valide" in text and "modifiée" in text and "Attestation valide." not in text
    assert "2020" not in text and attempt["reference"] not in text  # nothing shown from it
    # put back, then the attempt itself gone from the register: still refused
    mongo("booking").attestations.update_one({"_id": code}, {"$set": {"attestation": issued["attestation"]}})
    assert "Attestation valide." in unescape(http.get("/attestations/verify", params={"code": code}).text)
    mongo("booking").attempts.delete_one({"_id": attempt["reference"]})
    gone = unescape(http.get("/attestations/verify", params={"code": code}).text)
    assert "Attestation non valide" in gone and "plus toutes enregistrées" in gone
