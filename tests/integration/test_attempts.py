"""Evidence of failed attempts (M7) over real HTTP: gateway, slots, booking, notify and the
SMTP sink, on a real RabbitMQ vhost."""
import uuid
from datetime import date, timedelta

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from gateway.public.service import PublicGateway
from services.booking import evidence
from services.booking.service import BookingService
from services.common import attestation_code, signing
from services.notify.service import NotifyService
from services.slots.service import SlotsService
from tests.conftest import ATTESTATION_KEY, free_port
from tests.helpers import MailSink, plan
from tests.integration.conftest import nothing_left_to_send

PERSON = {"procedure": "renewal", "email": "amina.diallo@example.org", "foreigner_number": "0612345678"}


@pytest.fixture
def sink(tmp_path):
    started = MailSink(free_port(), tmp_path / "mail").start()
    yield started
    started.stop()


@pytest.fixture
def system(container_factory, config, sink, request):
    mail = dict(config, SMTP_HOST="127.0.0.1", SMTP_PORT=sink.port, SMTP_TIMEOUT=2,
                PUBLIC_BASE_URL="https://rdv.example.fr", ATTEMPTS_PER_DAY=3,
                NOTIFY_SWEEP_SECONDS=0.5,  # notify's timer looks often: mail_stays_at waits for it
                **getattr(request, "param", {}))
    for cls in (SlotsService, BookingService, NotifyService, PublicGateway):
        container_factory(cls, mail).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        # renewal slots exist but are all scheduled: nothing bookable
        rpc.slots.create_from_plan(plan(desks=2, days=7, start=date.today() + timedelta(days=7)))
        rpc.slots.create_from_plan(plan(procedure="duplicate", desks=1, days=7), release="now")
        yield rpc


def mail_stays_at(sink, count, system, config, notify_deliveries, notify_passes):
    """No more than `count` messages, and nothing more can come: notify has taken the event of
    every attempt booking recorded (tests/integration/conftest.py)."""
    recorded = len(system.booking.attempts_of(email=PERSON["email"])["attempts"])
    nothing_left_to_send(config, notify_deliveries, notify_passes, delivered=recorded)
    assert len(sink.messages()) == count


def record(http, **overrides):
    return http.post("/api/attempts", json=dict(PERSON, **overrides))


def test_an_attempt_is_recorded_receipted_listed_and_attested(http, system, sink):
    recorded = record(http)
    assert recorded.status_code == 201, recorded.text
    body = recorded.json()
    assert body["reference"].startswith("ATT-") and body["token"] and body["procedure"] == "renewal"
    assert "gratuits" in body["notice"]["fr"]
    [receipt] = sink.wait_for(1)
    assert receipt["To"] == PERSON["email"] and body["reference"] in receipt["Subject"]
    text = receipt.get_body(("plain",)).get_content()
    assert text.index("=== FRANÇAIS ===") < text.index("=== ENGLISH ===")  # French first
    assert "GRATUITS" in text
    # the links open pages a person can read and print, not the JSON API
    page = f"https://rdv.example.fr/attempts/{body['reference']}/attestation"
    assert f"{page}?token={body['token']}" in text and f"{page}.pdf?token={body['token']}" in text
    assert "/api/" not in text and "https://rdv.example.fr/attestations/verify" in text
    html = receipt.get_body(("html",)).get_content()
    token = body["token"]
    # the page in the language the attempt was recorded in (issue 21)
    assert f'href="{page}?token={token}&amp;lang=fr"' in html and "/api/" not in html
    # the real rule (services/common/penalty_waiver.py): attempts count up to the expiry day only
    for said in (text, html):
        assert "moins de 2 mois" not in said and "less than 2 months" not in said
        assert "Enregistrez vos tentatives avant l'expiration de votre titre de séjour" in said.replace("&#39;", "'")
        assert "Record your attempts before your residence permit expires" in said
        assert "au plus tard le jour où il expire" in said and "on or before its expiry day" in said
    # the link's page shows the attestation: this attempt, and the code to check it by
    home = f"/attempts/{body['reference']}"
    link = http.get(f"{home}/attestation", params={"token": token}, allow_redirects=False)
    assert link.status_code == 303 and link.headers["Location"] == f"{home}/attestation"
    assert "Secure" in link.headers["Set-Cookie"]  # PUBLIC_BASE_URL is https here
    # (so this plain-http client sends the cookie only when told to)
    followed = http.get(link.headers["Location"], cookies={"attempt_token": token})
    assert followed.status_code == 200 and body["reference"] in followed.text

    second = record(http).json()
    listed = http.get(f"/api/attempts/{second['reference']}", headers={"X-Attempt-Token": second["token"]})
    assert listed.status_code == 200
    assert [a["reference"] for a in listed.json()["attempts"]] == [body["reference"], second["reference"]]
    # unknown reference and wrong token: the same 404
    wrong = http.get(f"/api/attempts/{body['reference']}", params={"token": "x" * 43})
    unknown = http.get("/api/attempts/ATT-0000-0000", params={"token": body["token"]})
    assert wrong.status_code == unknown.status_code == 404 and wrong.json() == unknown.json()

    # someone who knows the foreigner number but not the e-mail sees none of it
    other = record(http, email="someone.else@example.org").json()
    theirs = http.get(f"/api/attempts/{other['reference']}", params={"token": other["token"]}).json()
    assert [a["reference"] for a in theirs["attempts"]] == [other["reference"]]

    document = http.get(f"/api/attempts/{body['reference']}/attestation",
                        params={"token": body["token"]}).json()
    fields = document["attestation"]
    assert fields["applicant"]["foreigner_number"] == PERSON["foreigner_number"]
    assert [a["reference"] for a in fields["attempts"]] == [body["reference"], second["reference"]]
    public_key = signing.load_private_key(ATTESTATION_KEY).public_key()
    assert signing.verify(public_key, document["signature"], fields)
    checked = http.post("/api/attestations/verify", json=document).json()
    assert checked == dict(checked, valid=True, signature_valid=True, attempts_on_record=True)
    # its verification code, derived from the signature, finds it on the verify page
    assert document["code"] == attestation_code.attestation_code(document["signature"])
    verify = http.get("/attestations/verify", params={"code": document["code"]})
    assert verify.status_code == 200 and "Attestation valide." in verify.text

    # an attempt added by hand: the signature no longer matches
    forged = dict(fields, attempts=fields["attempts"] + [dict(fields["attempts"][0], at="2020-01-01T00:00:00Z")])
    tampered = http.post("/api/attestations/verify", json=dict(document, attestation=forged)).json()
    assert (tampered["valid"], tampered["signature_valid"]) == (False, False)
    # signed with our key, but listing an attempt that was never recorded
    invented = dict(fields, attempts=[{"reference": "ATT-ZZZZ-ZZZZ", "procedure": "renewal",
                                       "at": "2027-01-04T09:00:00Z"}])
    signed = {"attestation": invented,
              "signature": signing.sign(signing.load_private_key(ATTESTATION_KEY), invented)}
    unknown = http.post("/api/attestations/verify", json=signed).json()
    assert (unknown["valid"], unknown["signature_valid"], unknown["attempts_on_record"]) == (False, True, False)


def test_at_most_n_attempts_per_applicant_and_day(http, system, sink):
    for _ in range(3):
        assert record(http).status_code == 201
    refused = record(http)
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_attempts" and "3" in refused.json()["message"]
    assert "personnel de la préfecture" in refused.json()["message"]
    assert "prefecture's staff" in refused.json()["message"]
    # the limit counts the foreigner number, whatever the e-mail
    assert record(http, email="another.box@example.org").status_code == 429
    # someone else is not affected; without a foreigner number, the e-mail is who counts
    assert record(http, foreigner_number="0699999999", email="someone.else@example.org").status_code == 201
    no_number = {"procedure": "renewal", "email": "new.comer@example.org", "foreigner_number": None}
    for _ in range(3):
        assert http.post("/api/attempts", json=no_number).status_code == 201
    assert http.post("/api/attempts", json=dict(no_number, email="New.Comer@example.org")).status_code == 429
    assert len(sink.wait_for(7)) == 7


def test_changing_the_foreigner_number_does_not_lift_the_e_mail_limit(
        http, system, sink, config, notify_deliveries, notify_passes):
    """The mail bomb of issue 25: six posts, six numbers, one address."""
    answers = [record(http, foreigner_number=f"06000000{n:02d}").status_code for n in range(6)]
    assert answers == [201, 201, 201, 429, 429, 429]
    # the same address spelt otherwise is the same mailbox
    assert record(http, email="Amina.Diallo@Example.org", foreigner_number="0600000099").status_code == 429
    sink.wait_for(3)
    mail_stays_at(sink, 3, system, config, notify_deliveries, notify_passes)


@pytest.mark.parametrize("system", [{"MAIL_PER_ADDRESS_PER_DAY": 2}], indirect=True)
def test_past_the_address_daily_mail_limit_an_attempt_is_recorded_without_a_receipt(
        http, system, sink, config, notify_deliveries, notify_passes):
    for _ in range(3):
        assert record(http).status_code == 201
    sink.wait_for(2)
    mail_stays_at(sink, 2, system, config, notify_deliveries, notify_passes)
    assert len(system.booking.attempts_of(email=PERSON["email"])["attempts"]) == 3


def test_the_same_idempotency_key_records_one_attempt_and_sends_one_receipt(
        http, system, sink, config, notify_deliveries, notify_passes):
    """POST /api/attempts sent again with its Idempotency-Key (after a 503, a lost answer)."""
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = http.post("/api/attempts", json=PERSON, headers=key)
    again = http.post("/api/attempts", json=PERSON, headers=key)
    assert first.status_code == again.status_code == 201, again.text
    assert {k: first.json()[k] for k in ("reference", "token", "at")} == \
        {k: again.json()[k] for k in ("reference", "token", "at")}
    sink.wait_for(1)
    mail_stays_at(sink, 1, system, config, notify_deliveries, notify_passes)
    assert len(system.booking.attempts_of(email=PERSON["email"])["attempts"]) == 1
    # without the key (or with another), another attempt
    assert http.post("/api/attempts", json=PERSON).json()["reference"] != first.json()["reference"]
    bad = http.post("/api/attempts", json=PERSON, headers={"Idempotency-Key": "short"})
    assert bad.status_code == 400 and list(bad.json()["fields"]) == ["Idempotency-Key"]


def test_in_requests_mode_the_request_is_the_evidence(http, system):
    """Places open for duplicates are not bookable by the public in requests mode: not
    `places_available` but a pointer to filing a request, and nothing recorded."""
    system.slots.set_mode("duplicate", "requests")
    refused = record(http, procedure="duplicate")
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["error"] == "use_request" and "procedure" in body["fields"]
    assert "déposez une demande" in body["message"] and "file a request" in body["message"]
    assert system.booking.attempts_of(email=PERSON["email"])["attempts"] == []


def test_an_attempt_while_places_are_bookable_is_refused(http, system):
    refused = record(http, procedure="duplicate")
    assert refused.status_code == 409
    assert refused.json()["error"] == "places_available" and "book one" in refused.json()["message"]
    assert "procedure" in refused.json()["fields"]


def test_bad_input_gets_400_with_the_fields(http, system):
    bad = http.post("/api/attempts", json={"procedure": "nope", "email": "not-an-email",
                                           "foreigner_number": {"$gt": ""}})
    assert bad.status_code == 400
    assert set(bad.json()["fields"]) == {"procedure", "email", "foreigner_number"}
    assert record(http, foreigner_number="12").json()["fields"]["foreigner_number"]
    assert http.post("/api/attempts", data="{", headers={"Content-Type": "application/json"}).status_code == 400
    assert http.get("/api/attempts/not-a-ref", params={"token": "x"}).json()["fields"] == {
        "reference": ["Not a valid attempt reference."]}
    assert http.post("/api/attestations/verify", json={"attestation": "x", "signature": 1}).status_code == 400
