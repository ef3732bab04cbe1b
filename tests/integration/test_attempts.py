"""Evidence of failed attempts (M7) over real HTTP: gateway, slots, booking, notify and the
SMTP sink, on a real RabbitMQ vhost."""
from datetime import date, timedelta

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from gateway.public.service import PublicGateway
from services.booking.service import BookingService
from services.common import signing
from services.notify.service import NotifyService
from services.slots.service import SlotsService
from tests.conftest import ATTESTATION_KEY, free_port
from tests.helpers import MailSink, plan

PERSON = {"procedure": "renewal", "email": "amina.diallo@example.org", "foreigner_number": "0612345678"}


@pytest.fixture
def sink(tmp_path):
    started = MailSink(free_port(), tmp_path / "mail").start()
    yield started
    started.stop()


@pytest.fixture
def system(container_factory, config, sink):
    mail = dict(config, SMTP_HOST="127.0.0.1", SMTP_PORT=sink.port, SMTP_TIMEOUT=2,
                PUBLIC_BASE_URL="https://rdv.example.fr", ATTEMPTS_PER_DAY=3)
    for cls in (SlotsService, BookingService, NotifyService, PublicGateway):
        container_factory(cls, mail).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        # renewal slots exist but are all scheduled: nothing bookable
        rpc.slots.create_from_plan(plan(desks=2, days=7, start=date.today() + timedelta(days=7)))
        rpc.slots.create_from_plan(plan(procedure="duplicate", desks=1, days=7), release="now")
        yield rpc


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
    assert f"https://rdv.example.fr/api/attempts/{body['reference']}?token={body['token']}" in text
    assert "GRATUITS" in text and "moins de 2 mois" in text

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
    # the limit counts the foreigner number, whatever the e-mail
    assert record(http, email="another.box@example.org").status_code == 429
    # someone else is not affected; without a foreigner number, the e-mail is who counts
    assert record(http, foreigner_number="0699999999").status_code == 201
    no_number = {"procedure": "renewal", "email": "new.comer@example.org", "foreigner_number": None}
    for _ in range(3):
        assert http.post("/api/attempts", json=no_number).status_code == 201
    assert http.post("/api/attempts", json=dict(no_number, email="New.Comer@example.org")).status_code == 429
    assert len(sink.wait_for(7)) == 7


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
