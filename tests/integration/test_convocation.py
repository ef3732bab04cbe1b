"""The printable convocation on the public gateway, and its code verified at the desk."""
import html as html_lib
from datetime import date, datetime, timedelta

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from gateway.public.service import PublicGateway
from services.booking.service import BookingService
from services.common.reference_data import FREE_NOTICE
from services.common.timeutil import PARIS
from services.slots.service import SlotsService
from tests.helpers import applicant, confirm_token_of, plan

NAME = {"family_name": "Nguyễn-Wiśniewska", "given_names": "Łukasz Thị"}


@pytest.fixture
def booked(container_factory, config, http, mongo):
    for cls in (SlotsService, BookingService, PublicGateway):
        container_factory(cls, config).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        rpc.slots.create_from_plan(plan(desks=2, start=date.today() + timedelta(days=1)), release="now")
        slot = http.get("/api/slots", params={"procedure": "renewal"}).json()["slots"][0]
        answer = http.post("/api/bookings", json=applicant(slot["id"], **NAME))
        assert answer.status_code == 201, answer.text
        # confirmed from its e-mail, as the booking of someone who comes to the desk is
        confirmed = http.post(f"/api/bookings/{answer.json()['reference']}/confirm",
                              headers={"X-Booking-Token":
                                       confirm_token_of(mongo, answer.json()["reference"])})
        assert confirmed.json()["status"] == "active"
        yield dict(answer.json(), rpc=rpc)


def test_the_convocation_page_has_everything_the_desk_needs(booked, http):
    reference, token = booked["reference"], booked["token"]
    page = http.get(f"/bookings/{reference}/convocation", params={"token": token})
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    text = html_lib.unescape(page.text)
    start = datetime.fromisoformat(booked["slot"]["start"]).astimezone(PARIS)
    for expected in (NAME["family_name"], NAME["given_names"], reference,
                     "Renouvellement de titre de séjour", start.strftime("le %d/%m/%Y à %H:%M"),
                     "34 place des Martyrs de la Résistance", FREE_NOTICE["fr"], FREE_NOTICE["en"],
                     "<svg"):
        assert expected in text, expected
    assert "<script" not in text and "style=" not in text  # CSP-clean
    code = text.split("<code>")[1].split("</code>")[0]
    assert code.startswith(reference + ".")
    # the same code checks in at the desk, on the slot's day and site
    outcome = booked["rpc"].booking.check_in({
        "code": code, "family_name": "NGUYEN WISNIEWSKA", "given_names": "lukasz thi",
        "site": "montpellier", "day": start.date().isoformat(), "agent": "agent"})
    assert outcome["result"] == "checked_in"


def test_the_convocation_link_moves_its_token_into_the_booking_cookie(booked, http):
    """The e-mail's convocation link: the token leaves the address bar for the cookie of the
    booking's pages, so the letter's links back (manage page, PDF) work from it."""
    reference, token = booked["reference"], booked["token"]
    link = http.get(f"/bookings/{reference}/convocation", params={"token": token, "lang": "en"},
                    allow_redirects=False)
    assert link.status_code == 303
    assert link.headers["Location"] == f"/bookings/{reference}/convocation"
    assert f"booking_token={token};" in link.headers["Set-Cookie"]
    page = http.get(link.headers["Location"])
    assert page.status_code == 200 and '<html lang="en">' in page.text
    assert f'href="/bookings/{reference}"' in page.text  # back to the booking
    assert 'href="/static/site.css"' in page.text  # styled like the pages
    text = html_lib.unescape(page.text)
    assert "What to bring" in text and "justificatif de domicile" in text
    assert "proof of address less than 6 months old" in text
    assert 'viewBox="' in page.text  # the QR scales with the screen
    assert http.get(f"/bookings/{reference}").status_code == 200
    assert http.get(f"/bookings/{reference}/convocation.pdf").status_code == 200


def test_the_pdf_convocation(booked, http):
    reference, token = booked["reference"], booked["token"]
    pdf = http.get(f"/bookings/{reference}/convocation.pdf", headers={"X-Booking-Token": token})
    assert pdf.status_code == 200
    assert pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.headers["Cache-Control"] == "no-store"
    assert pdf.content.startswith(b"%PDF") and len(pdf.content) > 5000
    assert b"DejaVu" in pdf.content  # the Unicode font is embedded: the names print as given


def test_without_the_right_token_the_convocation_is_not_found(booked, http):
    reference = booked["reference"]
    for path in (f"/bookings/{reference}/convocation", f"/bookings/{reference}/convocation.pdf"):
        assert http.get(path, params={"token": "wrong"}).status_code == 404
        assert http.get(path.replace(reference, "RDV-0000-0000"),
                        params={"token": booked["token"]}).status_code == 404
        # no token at all (the cookie the page's link left, gone): the page says "not found"
        # as for a wrong one; the API-like PDF, 400
        http.cookies.clear()
        assert http.get(path).status_code == (400 if path.endswith(".pdf") else 404)
