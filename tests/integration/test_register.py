"""Issue 24 over RabbitMQ, HTTP and SMTP: the register of current permits imported through
the staff gateway, renewals filed through the public gateway matched against it (priority
from the register's expiry, one refusal whichever field is wrong, 503 when the register does
not answer), and invitations mailed once even when their event is delivered twice."""
import re
import time
from datetime import date, timedelta

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy

from gateway.admin.service import AdminGateway
from gateway.public.service import PublicGateway
from services.common.register_check import MISMATCH, WRONG_PROCEDURE_FIELD, wrong_procedure
from services.notify.service import NotifyService
from services.register.service import RegisterService
from services.requests.allocation import draw
from services.requests.service import RequestsService
from services.slots.service import SlotsService
from tests.conftest import free_port
from tests.helpers import wait_until
from tests.integration.conftest import PASSWORD, add_staff, nothing_left_to_send
from tests.integration.test_admin_gateway import csrf_of, page_session
from tests.browser import PHONE, browser, focused_id, new_page, screenshot  # noqa: F401 (fixtures)
from tests.integration.test_admin_pages import fits
from tests.pages.browser_flows import axe_url  # noqa: F401 (fixture)
from tests.integration.test_partners import Http

HEADER = "foreigner_number,family_name,given_names,birth_date,permit_kind,expiry,email\n"
AVAILABILITY = {"sites": ["montpellier"], "times": [{"weekday": "tuesday", "from": "08:00",
                                                     "to": "12:00"}]}


def day(days):
    return (date.today() + timedelta(days=days)).isoformat()


def export(*rows):
    return HEADER + "".join(",".join(row) + "\n" for row in rows)


AWA = ("0412345678", "N'Diaye", "Awa Marie", "1990-04-02", "temporary", day(200), "")
KARIM = ("0498765432", "Benali", "Karim", "1985-11-12", "multi_year", day(40), "")


@pytest.fixture
def system(container_factory, config, sink, mongo, web_port):
    cfg = dict(config, SMTP_HOST="127.0.0.1", SMTP_PORT=sink.port, SMTP_TIMEOUT=2,
               NOTIFY_RETRY_BASE_SECONDS=0.2, NOTIFY_RETRY_MAX_SECONDS=1,
               NOTIFY_SWEEP_SECONDS=0.5, REQUEST_TIMER_SECONDS=0.5,
               REGISTER_CHECKED_PROCEDURES="renewal,renewal_10y",
               REGISTER_INVITE_TIMER_SECONDS=0.3,
               REGISTER_IMPORT_MAX_BYTES=8192)  # the tests' exports are smaller
    yield from register_system(container_factory, cfg, mongo, web_port, "renewal")


def register_system(container_factory, cfg, mongo, web_port, procedure):
    """Slots, notify, requests, the register and both gateways (the staff one on the test's
    web port), `procedure` in requests mode: what a register check is tested through."""
    public_port = free_port()
    for cls in (SlotsService, NotifyService, RequestsService):
        container_factory(cls, cfg).start()
    register = container_factory(RegisterService, cfg)
    register.start()
    container_factory(PublicGateway, dict(cfg, WEB_SERVER_ADDRESS=f"127.0.0.1:{public_port}")).start()
    container_factory(AdminGateway, cfg).start()
    add_staff(mongo)
    staff, public = Http(web_port), Http(public_port)
    with ClusterRpcProxy(cfg, timeout=20) as rpc:
        rpc.requests.set_mode(procedure, "requests", by="chief")
        yield {"rpc": rpc, "staff": staff, "public": public, "config": cfg, "register": register}
    staff.close()
    public.close()


def bearer(staff, username):
    answer = staff.post("/api/login", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def upload(staff, headers, text, preview=False):
    return staff.post("/api/register/import" + ("?preview=1" if preview else ""),
                      data=text.encode(), headers=dict(headers, **{"Content-Type": "text/csv"}))


def renewal(family="N'Diaye", number="0412345678", birth="1990-04-02", **overrides):
    return dict({"procedure": "renewal", "family_name": family, "given_names": "Awa Marie",
                 "birth_date": birth, "email": "awa@example.org", "foreigner_number": number,
                 "permit_expiry": day(5), "availability": AVAILABILITY}, **overrides)


def test_supervisors_import_preview_and_reimport_with_the_diff_audited(system, mongo):
    staff, rpc = system["staff"], system["rpc"]
    chief = bearer(staff, "chief")
    # agents and strangers cannot; a cookie does not open the API
    assert upload(staff, bearer(staff, "agent"), export(AWA)).status_code == 403
    assert upload(staff, {}, export(AWA)).status_code == 401
    assert staff.get("/api/register", headers=bearer(staff, "agent")).status_code == 403
    # JSON only as CSV
    assert staff.post("/api/register/import", json={"csv": "x"}, headers=chief).status_code == 415

    preview = upload(staff, chief, export(AWA, KARIM), preview=True)
    assert preview.status_code == 200, preview.text
    assert preview.json()["applied"] is False
    assert preview.json()["counts"] == {"permits": 2, "added": 2, "changed": 0, "removed": 0}
    assert rpc.register.status()["current"] is None  # nothing applied by a preview

    applied = upload(staff, chief, export(AWA, KARIM)).json()
    assert applied["applied"] and applied["diff"]["added"] == ["0412345678", "0498765432"]
    assert rpc.register.status()["current"]["permits"] == 2
    again = upload(staff, chief, export(AWA, KARIM)).json()  # re-importable: nothing changes
    assert again["counts"] == {"permits": 2, "added": 0, "changed": 0, "removed": 0}
    moved = AWA[:5] + (day(210), "awa@example.org")
    changed = upload(staff, chief, export(moved)).json()
    assert changed["diff"] == {"added": [], "removed": ["0498765432"],
                               "changed": [{"foreigner_number": "0412345678",
                                            "fields": ["expiry", "email"]}]}
    # one generation of entries kept: the old ones went with their switch
    assert mongo("register")["entries"].count_documents({}) == 1

    # a bad line: 400 with the line and the reason, nothing imported
    bad = upload(staff, chief, export(moved, ("0400000001", "Nouveau", "Jean", "1970-13-01",
                                               "temporary", day(90), "")))
    assert bad.status_code == 400, bad.text
    assert bad.json()["fields"]["csv"] == ["line 3, birth_date: not a date (YYYY-MM-DD or DD/MM/YYYY)"]
    assert "Nothing was imported" in bad.json()["message"]
    assert rpc.register.status()["current"]["permits"] == 1
    assert rpc.register.match("0412345678", "1990-04-02", "Ndiaye")["expiry"] == day(210)

    # too large: 413, nothing imported
    big = export(*[(f"04{i:08d}", "Martin", "Jean", "1970-01-01", "temporary", day(90), "")
                   for i in range(200)])
    assert upload(staff, chief, big).status_code == 413
    assert rpc.register.status()["current"]["permits"] == 1
    # operator-looking input never reaches a query
    from services.common.errors import InvalidRequest
    with pytest.raises(InvalidRequest) as refused:
        rpc.register.match({"$gt": ""}, "1990-04-02", "Ndiaye")
    assert "foreigner_number" in refused.value.fields
    with pytest.raises(InvalidRequest):
        rpc.register.import_register({"$gt": ""}, "chief", True)
    hostile = system["public"].post("/api/requests", json=renewal(
        invitation={"id": {"$gt": ""}, "token": "x"}))
    assert hostile.status_code == 400 and "invitation.id" in hostile.json()["fields"]

    entries = staff.get("/api/audit?object=register", headers=chief).json()["entries"]
    actions = sorted(e["action"] for e in entries)
    assert actions == ["register_imported"] * 3 + ["register_previewed"]
    assert all(e["who"] == "chief" for e in entries)
    assert "0412345678" not in str(entries)  # counts only in the audit log


def test_the_page_imports_with_csrf_and_shows_a_bad_line(system):
    staff = system["staff"]
    page_session(staff, "chief")
    page = staff.get("/register")
    assert page.status_code == 200 and "Aucun registre importé" in page.text
    files = {"csv": ("export.csv", export(AWA, KARIM).encode(), "text/csv")}
    refused = staff.post("/register", data={"csrf": "forged", "action": "apply"}, files=files)
    assert refused.status_code == 403
    assert system["rpc"].register.status()["current"] is None
    shown = staff.post("/register", data={"csrf": csrf_of(page.text), "action": "preview"},
                       files=files)
    assert shown.status_code == 200 and 'id="count-added">2<' in shown.text
    assert system["rpc"].register.status()["current"] is None
    done = staff.post("/register", data={"csrf": csrf_of(shown.text), "action": "apply"},
                      files=files)
    assert done.status_code == 200 and "Import appliqué" in done.text
    assert system["rpc"].register.status()["current"]["permits"] == 2
    bad = staff.post("/register", data={"csrf": csrf_of(done.text), "action": "apply"},
                     files={"csv": ("x.csv", b"foreigner_number,family_name\n1,2\n", "text/csv")})
    # the reason in French, beside the file's field
    assert bad.status_code == 400 and "Ligne d&#39;en-tête : colonne(s) manquante(s)" in bad.text
    assert 'aria-describedby="csv-error"' in bad.text
    assert system["rpc"].register.status()["current"]["permits"] == 2


def test_a_renewal_matches_the_register_whose_expiry_sets_its_place(system, mongo):
    staff, public, rpc = system["staff"], system["public"], system["rpc"]
    assert upload(staff, bearer(staff, "chief"), export(AWA, KARIM)).status_code == 200
    # the family name folded as M4 folds it; the expiry typed (5 days) is not believed
    filed = public.post("/api/requests", json=renewal(family="NDIAYE"))
    assert filed.status_code == 201, filed.text
    assert filed.json()["permit_expiry"] == day(200)
    stored = mongo("requests")["requests"].find_one({"_id": filed.json()["reference"]})
    assert stored["permit_expiry"] == day(200)
    assert stored["verified_by"] == "permits"  # what vouched for the person
    assert rpc.requests.counts()["by_expiry_month"]["renewal"] == {day(200)[:7]: 1}
    assert rpc.requests.counts()["by_verified"]["renewal"] == {"permits": 1}
    # Karim types a far expiry, the register says 40 days: the draw puts him first
    karim = public.post("/api/requests", json=renewal(
        family="Benali", number="0498765432", birth="1985-11-12", given_names="Karim",
        email="karim@example.org", permit_expiry=day(300)))
    assert karim.status_code == 201, karim.text
    stored = list(mongo("requests")["requests"].find())
    assert draw(stored, date.today())["result"] == [karim.json()["reference"],
                                                    filed.json()["reference"]]
    mongo("requests")["requests"].delete_one({"_id": karim.json()["reference"]})

    # a wrong number, birth date or family name: one answer, whichever it is
    answers = [public.post("/api/requests", json=body) for body in (
        renewal(number="0412345679", email="a1@example.org"),
        renewal(birth="1990-04-03", email="a2@example.org"),
        renewal(family="Ndiay", email="a3@example.org"),
        renewal(number="0400000000", birth="1970-01-01", family="Martin", email="a4@example.org"))]
    assert [a.status_code for a in answers] == [409] * 4
    bodies = [a.json() for a in answers]
    assert all(body == bodies[0] for body in bodies), bodies
    assert bodies[0]["message"] == MISMATCH and list(bodies[0]["fields"]) == ["identity"]
    for words in ("numéro d'étranger", "date de naissance", "nom de famille tel qu'il est écrit",
                  "accueil", "34 place des Martyrs"):
        assert words in bodies[0]["message"]
    for hint in ("N'Diaye", "NDIAYE", day(200), "Awa"):
        assert hint not in bodies[0]["message"]
    assert mongo("requests")["requests"].count_documents({}) == 1  # nothing filed for them

    # first applications have no register entry: e-mail confirmation as before
    rpc.requests.set_mode("first_application", "requests", by="chief")
    first = public.post("/api/requests", json=renewal(procedure="first_application",
                                                      foreigner_number=None,
                                                      email="first@example.org"))
    assert first.status_code == 201 and first.json()["state"] == "unconfirmed"


def test_a_permit_renewed_by_the_other_procedure_is_refused_naming_it(system, mongo, new_page,
                                                                      axe_url):
    """renewal and renewal_10y renew different permit kinds: a request for one that matches a
    permit of the other is refused (409) with the procedure to choose, told only to who gave
    the permit's number, birth date and name; anybody else gets the one mismatch."""
    staff, public, rpc = system["staff"], system["public"], system["rpc"]
    silva = ("0422222222", "Silva", "Ana", "1975-06-07", "resident_10y", day(110), "")
    assert upload(staff, bearer(staff, "chief"), export(AWA, silva)).status_code == 200
    rpc.requests.set_mode("renewal_10y", "requests", by="chief")
    # a temporary permit (renewed by "renewal") filed as a 10-year card, and the reverse
    wrong = public.post("/api/requests", json=renewal(procedure="renewal_10y"))
    assert wrong.status_code == 409, wrong.text
    assert wrong.json()["fields"] == {WRONG_PROCEDURE_FIELD: ["renewal"]}
    assert wrong.json()["message"] == wrong_procedure("renewal")[0]
    ana = dict(family_name="SILVA", given_names="Ana", birth_date="1975-06-07",
               foreigner_number="0422222222", email="ana@example.org")
    reverse = public.post("/api/requests", json=renewal(**ana))
    assert reverse.status_code == 409, reverse.text
    assert reverse.json()["fields"] == {WRONG_PROCEDURE_FIELD: ["renewal_10y"]}
    assert mongo("requests")["requests"].count_documents({}) == 0
    # an identity that does not match gets the one mismatch, whatever the procedure
    strangers = [public.post("/api/requests", json=body) for body in (
        renewal(procedure="renewal_10y", family="Diop", email="s1@example.org"),
        renewal(procedure="renewal_10y", birth="1990-04-03", email="s2@example.org"),
        renewal(family="Silva", number="0422222222", birth="1975-06-08", email="s3@example.org"))]
    assert [s.status_code for s in strangers] == [409] * 3
    assert all(s.json()["message"] == MISMATCH and list(s.json()["fields"]) == ["identity"]
               for s in strangers)
    # the right procedure: filed
    assert public.post("/api/requests", json=renewal(procedure="renewal_10y", **ana)).status_code == 201
    assert public.post("/api/requests", json=renewal()).status_code == 201

    # the form says it again with the form, and links to the right procedure's form
    page = public.get("/request/renewal_10y")
    filled = dict(re.findall(r'name="(\w+)"[^>]*value="([^"]*)"', page.text))
    form = [("family_name", "Ndiaye"), ("given_names", "Awa Marie"), ("birth_date", "1990-04-02"),
            ("email", "awa2@example.org"), ("foreigner_number", "0412345678"),
            ("csrf_token", filled["csrf_token"]), ("idempotency_key", filled["idempotency_key"]),
            ("sites", "montpellier"), ("times", "tuesday-morning")]
    shown = public.post("/request/renewal_10y", data=form, allow_redirects=False)
    assert shown.status_code == 409, shown.text
    assert "Ce titre se renouvelle par une autre démarche" in shown.text
    assert '<a href="/request/renewal">Renouvellement de titre de séjour</a>' in shown.text
    assert 'value="Ndiaye"' in shown.text and 'value="0412345678"' in shown.text
    arabic = public.post("/request/renewal_10y?lang=ar", data=form, allow_redirects=False)
    public.get("/request/renewal_10y?lang=fr")  # back to French (the language is remembered)
    assert arabic.status_code == 409 and "تُجدَّد هذه البطاقة عبر إجراء آخر" in arabic.text

    # a partner is checked like the public: refused, its quota place given back
    partner = rpc.requests.create_partner({
        "name": "Association d'accueil", "contact_email": "accueil@example.org",
        "quotas": {"renewal_10y": 1}, "expires": day(30), "by": "chief"})
    body = dict(renewal(procedure="renewal_10y", family="Ndiaye", email=None), mailbox="partner")
    body.pop("email")
    from services.common.errors import Refused
    with pytest.raises(Refused) as refused:
        rpc.requests.partner_file(partner["id"], body)
    assert refused.value.fields == {WRONG_PROCEDURE_FIELD: ["renewal"]}
    assert rpc.requests.partner(partner["id"])["usage"]["renewal_10y"]["used"] == 0
    # its pages say it at the top, the form kept
    login = public.get("/partners/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    public.post("/partners/login", data={"csrf_token": token, "api_key": partner["api_key"]})
    home = public.get("/partners")
    form = {"procedure": "renewal_10y", "family_name": "Ndiaye", "given_names": "Awa Marie",
            "birth_date": "1990-04-02", "foreigner_number": "0412345678", "mailbox": "partner",
            "sites": "montpellier", "times": "tuesday-morning",
            "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1),
            "idempotency_key": re.search(r'name="idempotency_key" value="([^"]+)"',
                                         home.text).group(1)}
    said = public.post("/partners", data=form)
    assert said.status_code == 409, said.text[:2000]
    # French spacing: the guillemets never left alone at a line's end
    assert "se renouvelle par la démarche «\xa0Renouvellement de titre de séjour\xa0»" in said.text
    assert "This permit is renewed" not in said.text  # the page's language only
    assert 'value="Ndiaye"' in said.text
    form["csrf_token"] = re.search(r'name="csrf_token" value="([^"]+)"', said.text).group(1)
    arabic = public.post("/partners?lang=ar", data=form)
    public.get("/partners?lang=fr")
    assert arabic.status_code == 409 and "اختره من قائمة «الإجراء»" in arabic.text
    assert "تجديد بطاقة الإقامة" in arabic.text and "se renouvelle" not in arabic.text
    # in Chromium at 320 px: said at the top, nothing wider than the screen, axe (issue 24)
    def file_the_wrong_procedure(browser_page):
        """Log in with the key and file a 10-year renewal for a permit the ordinary renewal renews."""
        browser_page.goto(public.base + "/partners/login")
        browser_page.fill("#api_key", partner["api_key"])
        browser_page.click("button[type=submit]")
        browser_page.wait_for_url("**/partners")
        browser_page.select_option("#procedure", "renewal_10y")
        for field in ("family_name", "given_names", "birth_date", "foreigner_number"):
            browser_page.fill(f"#{field}", form[field])
        browser_page.check("#sites")
        browser_page.check("#times")
        browser_page.click("text=Déposer la demande")
        browser_page.wait_for_selector(".error-summary")

    phone = new_page(viewport=PHONE)
    file_the_wrong_procedure(phone)
    assert "choisissez-la dans la liste" in phone.inner_text(".error-summary")
    phone.click("#to-field")  # the form is below the lists: one tap to the list to change
    assert focused_id(phone, "procedure") == "procedure"
    screenshot(phone, "partner-wrong-procedure-320")
    assert fits(phone)
    axe = new_page(viewport=PHONE, bypass_csp=True)
    axe.context.add_cookies(phone.context.cookies())
    file_the_wrong_procedure(axe)  # the form sent again there: the same state
    axe.add_script_tag(url=axe_url)
    found = axe.evaluate("axe.run({resultTypes: ['violations']}).then(r => r.violations.filter("
                         "v => ['serious', 'critical'].includes(v.impact)).map(v => v.id))")
    assert found == [], found
    # the desk files whatever the register says (the agent has the permit in hand)
    person = dict(renewal(procedure="renewal_10y", family="Ndiaye", given_names="Awa Marie"),
                  channel="desk", phone="0612345678")
    person.pop("email")
    mongo("requests")["requests"].delete_many({"procedure": "renewal_10y"})
    desk = rpc.requests.file_for_person(person, "agent")
    assert desk["state"] in ("waiting", "offered")


def test_a_renewal_is_503_while_the_register_does_not_answer(system, mongo):
    staff, public = system["staff"], system["public"]
    assert upload(staff, bearer(staff, "chief"), export(AWA)).status_code == 200
    system["register"].stop()
    answer = public.post("/api/requests", json=renewal())
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "service_unavailable"
    assert mongo("requests")["requests"].count_documents({}) == 0  # never accepted unchecked


def test_an_invitation_is_mailed_once_and_files_a_verified_request(
        system, sink, mongo, bus, notify_deliveries, notify_passes, container_factory):
    staff, public, rpc, cfg = system["staff"], system["public"], system["rpc"], system["config"]
    # a second register instance: two invitation timers
    container_factory(RegisterService, cfg).start()
    invitations = bus("register", "renewal_invitation")
    soon = ("0411111111", "Okafor", "Chinedu", "1980-02-03", "temporary", day(70), "chinedu@example.org")
    later = ("0422222222", "Silva", "Ana", "1975-06-07", "resident_10y", day(110), "ana@example.org")
    outside = ("0433333333", "Kim", "Min", "1992-01-01", "temporary", day(130), "min@example.org")
    no_contact = ("0444444444", "Ali", "Omar", "1991-01-01", "temporary", day(80), "")
    assert upload(staff, bearer(staff, "chief"), export(soon, later, outside, no_contact)).status_code == 200
    assert wait_until(lambda: len(sink.messages()) >= 2, timeout=20)
    # the event delivered a second time: notify's inbox makes it one message
    _, payload = invitations.wait_for(lambda kind, body: body["email"] == "chinedu@example.org",
                                      timeout=20)
    event_dispatcher(cfg)("register", "renewal_invitation", payload)
    # re-imported: the same permits are not invited again
    assert upload(staff, bearer(staff, "chief"), export(soon, later, outside, no_contact)).status_code == 200
    time.sleep(1)  # a few passes of both timers
    nothing_left_to_send(cfg, notify_deliveries, notify_passes, delivered=3)
    mails = sink.messages()
    assert sorted(str(m["To"]) for m in mails) == ["ana@example.org", "chinedu@example.org"]
    assert mongo("register")["invitations"].count_documents({}) == 2
    # soonest expiry first
    first = min(mongo("register")["invitations"].find(), key=lambda d: d["at_ts"])
    assert first["number"] == "0411111111"

    mail = next(m for m in mails if str(m["To"]) == "chinedu@example.org")
    text = mail.get_body(preferencelist=("plain",)).get_content()
    link = re.search(r"/request/renewal\?invitation=(INV-[0-9A-F]+)&token=([\w-]+)", text)
    assert link and "OKAFOR Chinedu" in text
    body = {"procedure": "renewal", "family_name": "Okafor", "given_names": "Chinedu",
            "birth_date": "1980-02-03", "email": "chinedu@example.org",
            "foreigner_number": "0411111111", "availability": AVAILABILITY,
            "invitation": {"id": link.group(1), "token": link.group(2)}}
    rpc.requests.set_mode("renewal_10y", "requests", by="chief")
    other = public.post("/api/requests", json=dict(body, procedure="renewal_10y"))
    assert other.status_code == 409, other.text  # as without the invitation
    assert other.json()["fields"] == {WRONG_PROCEDURE_FIELD: ["renewal"]}
    stranger = public.post("/api/requests", json=dict(body, procedure="renewal_10y",
                                                      birth_date="1980-02-04"))
    assert stranger.status_code == 409 and stranger.json()["message"] == MISMATCH
    filed = public.post("/api/requests", json=body)
    assert filed.status_code == 201, filed.text
    # the register proved the mailbox: waiting at once, its token given, no e-mail asking
    assert filed.json()["state"] == "waiting" and filed.json()["token"]
    assert filed.json()["permit_expiry"] == day(70)
    stored = mongo("requests")["requests"].find_one({"_id": filed.json()["reference"]})
    assert stored["verified_by"] == "invitation"
    # the link's page: the form filled in from the register, the invitation kept in it
    page = public.get(f"/request/renewal?invitation={link.group(1)}&token=forged")
    assert page.status_code == 404 and "plus valable" in page.text
    page = public.get(f"/request/renewal?invitation={link.group(1)}&token={link.group(2)}")
    assert page.status_code == 200 and 'id="invited"' in page.text
    assert 'value="Okafor"' in page.text and 'value="0411111111"' in page.text
    assert f'name="invitation" value="{link.group(1)}"' in page.text
    forged = public.post("/api/requests", json=dict(body, email="other@example.org",
                                                    invitation={"id": link.group(1),
                                                                "token": "forged"}))
    assert forged.status_code == 400 and "invitation" in forged.json()["fields"]
    time.sleep(3)  # past OUTBOX_GRACE_SECONDS and a few relay passes
    assert len(sink.messages()) == 2, [(str(m["To"]), str(m["Subject"])) for m in sink.messages()]


def test_the_invitation_page_files_a_verified_request_and_the_form_says_a_mismatch(system, sink):
    staff, public = system["staff"], system["public"]
    soon = ("0411111111", "Okafor", "Chinedu", "1980-02-03", "temporary", day(70), "chinedu@example.org")
    assert upload(staff, bearer(staff, "chief"), export(soon, AWA)).status_code == 200
    assert wait_until(lambda: sink.messages(), timeout=20)
    text = sink.messages()[0].get_body(preferencelist=("plain",)).get_content()
    path = re.search(r"(/request/renewal\?invitation=INV-[0-9A-F]+&token=[\w-]+)", text).group(1)
    page = public.get(path)
    filled = dict(re.findall(r'name="(\w+)"[^>]*value="([^"]*)"', page.text))
    form = [(k, filled[k]) for k in ("family_name", "given_names", "birth_date", "email",
                                     "foreigner_number", "permit_expiry", "invitation",
                                     "invitation_token", "idempotency_key", "csrf_token")]
    form += [("sites", "montpellier"), ("times", "tuesday-morning")]
    done = public.post("/request/renewal", data=form, allow_redirects=False)
    assert done.status_code == 303, done.text
    reference = done.headers["Location"].rsplit("/", 1)[1]
    assert "token" not in done.headers["Location"]
    shown = public.get(done.headers["Location"])  # the request's cookie came with the answer
    assert shown.status_code == 200 and reference in shown.text
    time.sleep(3)  # past OUTBOX_GRACE_SECONDS and a few relay passes
    assert len(sink.messages()) == 1  # the invitation only: no e-mail asking to confirm

    # the plain form, a family name that is not the permit's: one message, the desks
    page = public.get("/request/renewal")
    filled = dict(re.findall(r'name="(\w+)"[^>]*value="([^"]*)"', page.text))
    wrong = [("family_name", "Diop"), ("given_names", "Awa Marie"), ("birth_date", "1990-04-02"),
             ("email", "awa@example.org"), ("foreigner_number", "0412345678"),
             ("csrf_token", filled["csrf_token"]), ("idempotency_key", filled["idempotency_key"]),
             ("sites", "montpellier"), ("times", "tuesday-morning")]
    refused = public.post("/request/renewal", data=wrong, allow_redirects=False)
    assert refused.status_code == 409, refused.text
    assert "Votre titre de séjour n&#39;a pas été trouvé" in refused.text or \
        "Votre titre de séjour n'a pas été trouvé" in refused.text
    assert "34 place des Martyrs" in refused.text and "N&#39;Diaye" not in refused.text


def test_of_two_imports_from_one_register_only_one_is_applied(system, mongo):
    """Both read the same register, both write their generation: the switch is one
    conditional update, so the second is told to import again and leaves nothing behind."""
    from services.register.store import RegisterStore, SwitchRefused

    staff, rpc = system["staff"], system["rpc"]
    assert upload(staff, bearer(staff, "chief"), export(AWA)).status_code == 200
    store = RegisterStore(mongo("register"))
    base = store.current()["generation"]
    # another import switched meanwhile (through the service, from the same base)
    assert upload(staff, bearer(staff, "chief"), export(AWA, KARIM)).status_code == 200
    store.write_generation("late", [{"_id": "late:0400000001", "generation": "late",
                                     "number": "0400000001", "match": "x"}])
    with pytest.raises(SwitchRefused):
        store.switch(base, {"generation": "late", "at_ts": 0, "by": "x", "counts": {}})
    assert rpc.register.status()["current"]["permits"] == 2
    assert rpc.register.match("0498765432", "1985-11-12", "BENALI")["matched"] is True
    with pytest.raises(SwitchRefused):  # a first import racing another first import
        RegisterStore(mongo("register")).switch(None, {"generation": "late"})


def test_a_partners_renewal_is_checked_against_the_register_too(system, mongo):
    """Accredited partners file born confirmed: the register is what ties their renewals to a
    real permit (the same refusal, the register's expiry, their quota place given back)."""
    from services.common.errors import Refused

    staff, rpc = system["staff"], system["rpc"]
    assert upload(staff, bearer(staff, "chief"), export(AWA, KARIM)).status_code == 200
    partner = rpc.requests.create_partner({
        "name": "Association d'accueil", "contact_email": "accueil@example.org",
        "quotas": {"renewal": 5}, "expires": day(30), "by": "chief"})
    body = dict(renewal(family="NDIAYE", permit_expiry=day(3)), mailbox="partner")
    body.pop("email")
    filed = rpc.requests.partner_file(partner["id"], body)
    assert filed["permit_expiry"] == day(200)
    # the register matched: counted as the permits' (the partner's name is on filed_by)
    assert mongo("requests")["requests"].find_one()["verified_by"] == "permits"
    with pytest.raises(Refused) as refused:
        rpc.requests.partner_file(partner["id"], dict(body, family_name="Benali"))
    assert refused.value.message == MISMATCH
    assert mongo("requests")["requests"].count_documents({}) == 1
