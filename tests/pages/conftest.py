"""The applicant pages in front of the real slots and booking services, on a vhost per test."""
import re

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from gateway.public.service import PublicGateway
from services.booking.service import BookingService
from services.slots.service import SlotsService
from tests.browser import browser, new_page  # noqa: F401  (fixtures)
from tests.e2e.conftest import System
from tests.helpers import plan


@pytest.fixture
def gateway_config(config, request):
    return dict(config, **getattr(request, "param", {}))


@pytest.fixture
def services_config(config, request):
    """Settings of the slots and booking services for one test (indirect parametrize)."""
    return dict(config, **getattr(request, "param", {}))


@pytest.fixture
def site(container_factory, config, gateway_config, services_config, web_port):
    """Gateway, slots and booking running; renewals and 10-year renewals open at Montpellier,
    nothing at Béziers; the gateway's base URL."""
    for cls, cls_config in ((PublicGateway, gateway_config), (SlotsService, services_config),
                            (BookingService, services_config)):
        container_factory(cls, cls_config).start()
    with ClusterRpcProxy(config, timeout=20) as rpc:
        # open at once: a scheduled batch opens only when the release timer gets to it
        rpc.slots.create_from_plan(plan(desks=1, days=7), release="now")
        rpc.slots.create_from_plan(plan(procedure="renewal_10y", desks=1, days=7), release="now")
    return f"http://127.0.0.1:{web_port}"


@pytest.fixture
def live_site(config, tmp_path, web_port):
    """The same, each service its own `nameko run` process: Playwright's sync calls block this
    process's only OS thread, so a gateway served from here under eventlet could never answer."""
    system = System(config, tmp_path)
    for name in ("slots", "booking", "public_gateway"):
        system.start(name)
    try:
        system.wait_ready()
        with system.rpc() as rpc:
            rpc.slots.create_from_plan(plan(desks=1, days=7), release="now")
            rpc.slots.create_from_plan(plan(procedure="renewal_10y", desks=1, days=7),
                                       release="now")
        yield f"http://127.0.0.1:{web_port}"
    finally:
        system.stop()


def csrf_of(html):
    """The CSRF token a page's form carries."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def first_slot_path(http, procedure="renewal", site_code="montpellier"):
    page = http.get(f"/book/{procedure}/{site_code}")
    assert page.status_code == 200, page.text
    found = re.search(rf'href="(/book/{procedure}/{site_code}/[^"]+)"', page.text)
    assert found, "no slot offered"
    return found.group(1)


FORM = {"family_name": "Benali", "given_names": "Yasmine", "birth_date": "1988-03-14",
        "email": "yasmine.benali@example.org", "phone": "06 12 34 56 78",
        "foreigner_number": "0123456789"}
