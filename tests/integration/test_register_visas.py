"""Issue 24, first applications: the register of long-stay visas imported through the staff
gateway (the permits' import, diff and audit, another book), and first applications filed
through the public gateway matched against it (one refusal whichever field is wrong, 503 when
the register does not answer); the desk files without a visa, a partner's filing is checked."""
from datetime import date, timedelta

import pytest

from services.common.errors import InvalidRequest, Refused
from services.common.register_check import VISA_MISMATCH, VISA_MISSING
from tests.integration.test_admin_gateway import csrf_of, page_session
from tests.integration.test_partners import Http
from tests.integration.test_register import AVAILABILITY, bearer, register_system

HEADER = "visa_number,family_name,given_names,birth_date,visa_kind,validity_end\n"


def day(days):
    return (date.today() + timedelta(days=days)).isoformat()


def export(*rows):
    return HEADER + "".join(",".join(row) + "\n" for row in rows)


AWA = ("FRA123456789", "N'Diaye", "Awa Marie", "1990-04-02", "vls_ts", day(60))
KARIM = ("FRA987654321", "Benali", "Karim", "1985-11-12", "vls", day(20))


@pytest.fixture
def system(container_factory, config, sink, mongo, web_port):
    cfg = dict(config, SMTP_HOST="127.0.0.1", SMTP_PORT=sink.port, SMTP_TIMEOUT=2,
               REQUEST_TIMER_SECONDS=0.5,
               VISA_CHECKED_PROCEDURES="first_application",
               REGISTER_IMPORT_MAX_BYTES=8192)
    yield from register_system(container_factory, cfg, mongo, web_port, "first_application")


def upload(staff, headers, text, preview=False):
    return staff.post("/api/register/visas/import" + ("?preview=1" if preview else ""),
                      data=text.encode(), headers=dict(headers, **{"Content-Type": "text/csv"}))


def first(family="N'Diaye", visa="FRA123456789", birth="1990-04-02", **overrides):
    return dict({"procedure": "first_application", "family_name": family,
                 "given_names": "Awa Marie", "birth_date": birth, "email": "awa@example.org",
                 "visa_number": visa, "availability": AVAILABILITY}, **overrides)


def test_supervisors_import_the_visas_with_the_diff_audited(system, mongo):
    staff, rpc = system["staff"], system["rpc"]
    chief = bearer(staff, "chief")
    assert upload(staff, bearer(staff, "agent"), export(AWA)).status_code == 403
    assert upload(staff, {}, export(AWA)).status_code == 401
    assert staff.get("/api/register/visas", headers=bearer(staff, "agent")).status_code == 403
    assert staff.post("/api/register/visas/import", json={"csv": "x"},
                      headers=chief).status_code == 415

    preview = upload(staff, chief, export(AWA, KARIM), preview=True)
    assert preview.status_code == 200, preview.text
    assert preview.json()["counts"] == {"visas": 2, "added": 2, "changed": 0, "removed": 0}
    assert rpc.register.visa_status()["current"] is None
    applied = upload(staff, chief, export(AWA, KARIM)).json()
    assert applied["applied"] and applied["diff"]["added"] == ["FRA123456789", "FRA987654321"]
    status = staff.get("/api/register/visas", headers=chief).json()
    assert status["current"]["visas"] == 2 and status["current"]["by"] == "chief"
    # the permits' book is another: untouched
    assert rpc.register.status()["current"] is None
    again = upload(staff, chief, export(AWA, KARIM)).json()
    assert again["counts"] == {"visas": 2, "added": 0, "changed": 0, "removed": 0}
    longer = AWA[:5] + (day(90),)
    changed = upload(staff, chief, export(longer)).json()
    assert changed["diff"] == {"added": [], "removed": ["FRA987654321"],
                               "changed": [{"visa_number": "FRA123456789",
                                            "fields": ["validity_end"]}]}
    assert mongo("register")["visas"].count_documents({}) == 1  # the old generation dropped
    assert mongo("register")["entries"].count_documents({}) == 0

    bad = upload(staff, chief, export(longer, ("FRA1", "Nouveau", "Jean", "1970-01-01", "vls_ts",
                                               day(30))))
    assert bad.status_code == 400, bad.text
    assert bad.json()["fields"]["csv"] == ["line 3, visa_number: not 6 to 20 letters and digits"]
    assert rpc.register.visa_status()["current"]["visas"] == 1
    big = export(*[(f"FRA{i:09d}", "Martin", "Jean", "1970-01-01", "vls_ts", day(30))
                   for i in range(200)])
    assert upload(staff, chief, big).status_code == 413
    with pytest.raises(InvalidRequest):
        rpc.register.match_visa({"$gt": ""}, "1990-04-02", "Ndiaye")

    entries = staff.get("/api/audit?object=register", headers=chief).json()["entries"]
    assert sorted(e["action"] for e in entries) == ["visas_imported"] * 3 + ["visas_previewed"]
    assert all(e["who"] == "chief" for e in entries)
    assert "FRA123456789" not in str(entries)  # counts only in the audit log


def test_the_visas_page_imports_with_csrf(system):
    staff, rpc = system["staff"], system["rpc"]
    page_session(staff, "chief")
    page = staff.get("/register/visas")
    assert page.status_code == 200 and "Registre des visas de long séjour" in page.text
    assert "Aucun registre importé" in page.text and 'action="/register/visas"' in page.text
    files = {"csv": ("visas.csv", export(AWA, KARIM).encode(), "text/csv")}
    refused = staff.post("/register/visas", data={"csrf": "forged", "action": "apply"},
                         files=files)
    assert refused.status_code == 403
    assert rpc.register.visa_status()["current"] is None
    shown = staff.post("/register/visas", data={"csrf": csrf_of(page.text), "action": "preview"},
                       files=files)
    assert shown.status_code == 200 and 'id="count-added">2<' in shown.text
    done = staff.post("/register/visas", data={"csrf": csrf_of(shown.text), "action": "apply"},
                      files=files)
    assert done.status_code == 200 and "Import appliqué" in done.text
    assert 'id="count-visas">2<' in done.text
    assert rpc.register.visa_status()["current"]["visas"] == 2
    assert rpc.register.status()["current"] is None  # not the permits
    # an agent does not see it
    agent = Http(staff.base.rsplit(":", 1)[1])
    page_session(agent, "agent")
    assert agent.get("/register/visas").status_code == 403
    agent.close()


def test_a_first_application_must_match_a_visa(system, mongo):
    staff, public = system["staff"], system["public"]
    assert upload(staff, bearer(staff, "chief"), export(AWA, KARIM)).status_code == 200
    # folded as M4 folds names; the number as copied from the sticker (spaces, lower case)
    filed = public.post("/api/requests", json=first(family="NDIAYE", visa="fra 1234 56789"))
    assert filed.status_code == 201, filed.text
    assert filed.json()["state"] == "unconfirmed"  # still confirmed from the mailbox
    stored = mongo("requests")["requests"].find_one({"_id": filed.json()["reference"]})
    assert stored["verified_by"] == "visas"

    # a wrong visa number, birth date or family name: one answer, whichever it is
    answers = [public.post("/api/requests", json=body) for body in (
        first(visa="FRA123456788", email="a1@example.org"),
        first(birth="1990-04-03", email="a2@example.org"),
        first(family="Ndiay", email="a3@example.org"),
        # a real visa, another person's name on it
        first(visa="FRA987654321", email="a4@example.org"),
        first(visa="XYZ0000000", birth="1970-01-01", family="Martin", email="a5@example.org"))]
    assert [a.status_code for a in answers] == [409] * 5
    bodies = [a.json() for a in answers]
    assert all(body == bodies[0] for body in bodies), bodies
    assert bodies[0]["message"] == VISA_MISMATCH and list(bodies[0]["fields"]) == ["visa"]
    for hint in ("N'Diaye", "NDIAYE", "Benali", day(60), "Awa", "FRA"):
        assert hint not in bodies[0]["message"]
    # without a visa number: 400, the field and the reason
    missing = public.post("/api/requests", json=first(visa=None, email="a6@example.org"))
    assert missing.status_code == 400, missing.text
    assert missing.json()["fields"] == {"visa_number": [VISA_MISSING]}
    malformed = public.post("/api/requests", json=first(visa="F$1", email="a7@example.org"))
    assert malformed.status_code == 400 and "visa_number" in malformed.json()["fields"]
    assert mongo("requests")["requests"].count_documents({}) == 1  # nothing filed for them

    # renewals do not ask for a visa (their permit is checked when REGISTER_CHECKED_PROCEDURES
    # says so: off here)
    system["rpc"].requests.set_mode("renewal", "requests", by="chief")
    renewal = public.post("/api/requests", json=first(
        procedure="renewal", visa=None, foreigner_number="0412345678", email="r@example.org"))
    assert renewal.status_code == 201, renewal.text


def test_the_form_asks_for_the_visa_and_says_a_mismatch_in_every_language(system):
    staff, public = system["staff"], system["public"]
    assert upload(staff, bearer(staff, "chief"), export(AWA)).status_code == 200
    page = public.get("/request/first_application")
    assert page.status_code == 200 and 'name="visa_number"' in page.text
    assert 'name="visa_number"' in public.get("/request/first_application?lang=en").text
    arabic = public.get("/request/first_application?lang=ar").text
    assert "رقم تأشيرة الإقامة الطويلة الخاصة بك" in arabic
    public.get("/request/first_application?lang=fr")  # back to French for what follows
    filled = dict(__import__("re").findall(r'name="(\w+)"[^>]*value="([^"]*)"', page.text))
    form = [("family_name", "Diop"), ("given_names", "Awa Marie"), ("birth_date", "1990-04-02"),
            ("email", "awa@example.org"), ("visa_number", "FRA123456789"),
            ("csrf_token", filled["csrf_token"]), ("idempotency_key", filled["idempotency_key"]),
            ("sites", "montpellier"), ("times", "tuesday-morning")]
    refused = public.post("/request/first_application", data=form, allow_redirects=False)
    assert refused.status_code == 409, refused.text
    assert "Votre visa de long séjour n&#39;a pas été trouvé" in refused.text or \
        "Votre visa de long séjour n'a pas été trouvé" in refused.text
    assert "34 place des Martyrs" in refused.text and "N&#39;Diaye" not in refused.text
    assert 'value="Diop"' in refused.text and 'value="FRA123456789"' in refused.text
    # no number typed: the field's own message
    empty = public.post("/request/first_application",
                        data=[(k, "" if k == "visa_number" else v) for k, v in form],
                        allow_redirects=False)
    assert empty.status_code == 400 and 'id="visa_number-error"' in empty.text
    assert "vignette collée dans votre passeport" in empty.text
    # right: the receipt (an e-mail to confirm)
    right = public.post("/request/first_application",
                        data=[(k, "NDIAYE" if k == "family_name" else v) for k, v in form],
                        allow_redirects=False)
    assert right.status_code == 200 and "REQ-" in right.text


def test_a_visa_ended_longer_ago_than_the_grace_gets_the_one_mismatch(system, mongo):
    """VISA_VALIDITY_GRACE_DAYS (90 by default): a visa that ended 89 days ago still leads to
    a first application; one that ended 91 days ago is refused, and the answer is the very one
    a visa not in the register gets (nothing says the register holds it)."""
    staff, public = system["staff"], system["public"]
    recent = ("FRA111111111", "Diallo", "Mariam", "1992-03-04", "vls_ts", day(-89))
    old = ("FRA222222222", "Traore", "Moussa", "1988-07-08", "vls", day(-91))
    assert upload(staff, bearer(staff, "chief"), export(recent, old)).status_code == 200
    accepted = public.post("/api/requests", json=first(
        family="Diallo", given_names="Mariam", birth="1992-03-04", visa="FRA111111111",
        email="mariam@example.org"))
    assert accepted.status_code == 201, accepted.text
    refused = public.post("/api/requests", json=first(
        family="Traore", given_names="Moussa", birth="1988-07-08", visa="FRA222222222",
        email="moussa@example.org"))
    unknown = public.post("/api/requests", json=first(
        family="Traore", given_names="Moussa", birth="1988-07-08", visa="FRA333333333",
        email="moussa2@example.org"))
    assert refused.status_code == unknown.status_code == 409, refused.text
    assert refused.json() == unknown.json()
    assert refused.json()["message"] == VISA_MISMATCH
    assert day(-91) not in refused.text
    assert mongo("requests")["requests"].count_documents({}) == 1


def test_a_first_application_is_503_while_the_register_does_not_answer(system, mongo):
    staff, public = system["staff"], system["public"]
    assert upload(staff, bearer(staff, "chief"), export(AWA)).status_code == 200
    system["register"].stop()
    answer = public.post("/api/requests", json=first())
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "service_unavailable"
    assert mongo("requests")["requests"].count_documents({}) == 0  # never accepted unchecked


def test_the_desk_files_without_a_visa_and_a_partner_is_checked(system, mongo):
    """The way in without a visa is the desk (the agent has the passport in hand); a partner
    files born confirmed, so its first applications match a visa as the site's do."""
    staff, rpc = system["staff"], system["rpc"]
    assert upload(staff, bearer(staff, "chief"), export(AWA)).status_code == 200
    person = dict(first(family="Sow", given_names="Aminata", birth="1979-05-06", visa=None),
                  channel="desk", phone="0612345678")
    person.pop("email")
    desk = rpc.requests.file_for_person(person, "agent")
    assert desk["state"] in ("waiting", "offered")
    partner = rpc.requests.create_partner({
        "name": "Association d'accueil", "contact_email": "accueil@example.org",
        "quotas": {"first_application": 5}, "expires": day(30), "by": "chief"})
    body = dict(first(), mailbox="partner")
    body.pop("email")
    with pytest.raises(Refused) as refused:
        rpc.requests.partner_file(partner["id"], dict(body, family_name="Benali"))
    assert refused.value.message == VISA_MISMATCH
    filed = rpc.requests.partner_file(partner["id"], body)
    assert filed["state"] in ("waiting", "offered")
    assert rpc.requests.counts()["by_verified"]["first_application"] == {"desk": 1, "visas": 1}
    assert mongo("requests")["requests"].count_documents({}) == 2
    usage = rpc.requests.partner(partner["id"])
    assert usage["quotas"] == {"first_application": 5}
