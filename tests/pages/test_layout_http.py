"""The State design system's layout over real HTTP: the three notices from every page's footer,
the DSFR's files served by the gateway itself, nothing loaded from another site, the fairness
page inside the site's layout (issue 21)."""
import re
from html import unescape

import pytest

from gateway.public.notices import NOTICES
from tests.pages.conftest import FORM, first_slot_path

# what a page may load by itself (stylesheets, images, fonts, scripts, frames, form targets)
RESOURCE = re.compile(r"""<(?:link|script|img|iframe|source|video|audio|embed|object)\b[^>]*?"""
                      r"""\b(?:href|src|srcset|data)=["']([^"']*)["']""", re.I)
FORM_ACTION = re.compile(r"""<form\b[^>]*\baction=["']([^"']*)["']""", re.I)
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)""")
FOOTER = re.compile(r"<footer\b.*?</footer>", re.S)


def public_pages(http):
    """One of each kind of public page, booking pages included (the client keeps the cookie)."""
    slot_path = first_slot_path(http)
    created = http.post("/api/bookings", json=dict(
        FORM, procedure="renewal", slot_id=first_slot_path(http).rsplit("/", 1)[1])).json()
    http.get(f"/bookings/{created['reference']}", params={"token": created["token"]})
    reference = created["reference"]
    return ["/", "/book", "/book/renewal", "/book/renewal/montpellier", slot_path,
            "/book/duplicate/beziers", f"/bookings/{reference}", f"/bookings/{reference}/cancel",
            f"/bookings/{reference}/convocation", "/attempts/new", "/attestations/verify",
            "/fairness", "/bookings/RDV-0000-0000", *NOTICES]


def loaded_from_outside(html):
    """What a page would load from another site: resources and form targets not on this one."""
    found = RESOURCE.findall(html) + FORM_ACTION.findall(html)
    found += CSS_URL.findall(" ".join(re.findall(r"<style\b.*?</style>", html, re.S)))
    found += CSS_URL.findall(" ".join(re.findall(r"""style=["'][^"']*["']""", html)))
    return [url for url in found
            if not (url.startswith("/") and not url.startswith("//")) and not url.startswith("#")
            and not url.startswith("data:")]


def test_the_outside_check_sees_what_it_must_refuse():
    for html in ('<link rel="stylesheet" href="https://cdn.example/dsfr.css">',
                 '<script src="//cdn.example/a.js"></script>', '<img src="http://x/y.png">',
                 '<form method="post" action="https://elsewhere.example/">',
                 '<style>@font-face{src:url(https://fonts.example/m.woff2)}</style>'):
        assert loaded_from_outside(html), html
    assert not loaded_from_outside('<link rel="stylesheet" href="/static/dsfr/dsfr.min.css">'
                                   '<a href="https://legifrance.gouv.fr">legifrance</a>')


def test_every_page_links_to_the_three_notices_in_its_footer(http, site):
    for path in public_pages(http):
        for lang in ("fr", "en"):
            page = http.get(path, params={"lang": lang})
            assert page.headers["Content-Type"].startswith("text/html"), path
            footer = FOOTER.search(page.text)
            assert footer, f"{path}: no footer"
            for notice in NOTICES:
                assert f'href="{notice}"' in footer.group(0), (path, lang, notice)
            assert "Accessibilité : non conforme" in unescape(page.text) if lang == "fr" \
                else "Accessibility: not compliant" in page.text, path
    for notice, (_, title_fr, title_en) in NOTICES.items():
        for lang, title in (("fr", title_fr), ("en", title_en)):
            page = http.get(notice, params={"lang": lang})
            assert page.status_code == 200, notice
            heading = re.search(r"<h1>(.*?)</h1>", page.text, re.S).group(1)
            assert unescape(heading) == title
            assert f'<html lang="{lang}">' in page.text


def test_no_page_loads_anything_from_another_site(http, site):
    for path in public_pages(http):
        page = http.get(path)
        assert not loaded_from_outside(page.text), (path, loaded_from_outside(page.text))
        assert '<link rel="stylesheet" href="/static/dsfr/dsfr.min.css">' in page.text, path
        assert "default-src 'self'" in page.headers["Content-Security-Policy"], path
    for stylesheet in ("/static/site.css", "/static/dsfr/dsfr.min.css"):
        css = http.get(stylesheet).text
        outside = [url for url in CSS_URL.findall(css)
                   if url.startswith(("http:", "https:", "//"))]
        assert not outside, (stylesheet, outside)


def test_the_design_system_is_served_by_the_gateway(http, site):
    css = http.get("/static/dsfr/dsfr.min.css")
    assert css.status_code == 200 and css.headers["Content-Type"] == "text/css; charset=utf-8"
    assert css.headers["X-Content-Type-Options"] == "nosniff"
    assert css.headers["Cache-Control"].startswith("public")
    assert ".fr-header" in css.text and "Marianne" in css.text
    # gzipped for a client that takes it (requests asks for it and unpacks it), whole otherwise
    assert css.headers["Content-Encoding"] == "gzip" and css.headers["Vary"] == "Accept-Encoding"
    assert int(css.headers["Content-Length"]) < len(css.content) / 4
    plain = http.get("/static/dsfr/dsfr.min.css", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.content == css.content
    # every file the stylesheet refers to (fonts, icons) is here, with its type
    types = {"woff2": "font/woff2", "woff": "font/woff", "svg": "image/svg+xml"}
    referred = sorted({url for url in CSS_URL.findall(css.text) if not url.startswith("data:")})
    assert any(url.endswith("Marianne-Regular.woff2") for url in referred)
    for url in referred:
        answer = http.get(f"/static/dsfr/{url}")
        assert answer.status_code == 200, url
        assert answer.headers["Content-Type"] == types[url.rsplit(".", 1)[1]], url
        assert answer.content
    # nothing else from the folder or beyond it
    for path in ("/static/dsfr/nothing.css", "/static/dsfr/VERSION", "/static/dsfr/LICENSE.md",
                 "/static/dsfr/../pages.py", "/static/dsfr/%2e%2e/pages.py",
                 "/static/dsfr/..%2f..%2fservice.py"):
        assert http.get(path).status_code == 404, path


@pytest.mark.parametrize("gateway_config", [{
    "BOOKING_CONFIRM_MINUTES": 45, "REQUEST_DRAW_RETENTION_DAYS": 200,
    "BOOKING_RETENTION_DAYS": 400, "REQUEST_RETENTION_DAYS": 300, "NOTIFY_RETENTION_DAYS": 60,
    "PUBLIC_HOST": "Hébergeur d'essai, 1 rue de l'Exemple, 34000 Montpellier"}], indirect=True)
def test_the_notices_state_the_configured_retention_and_host(http, site):
    data = unescape(http.get("/donnees-personnelles").text)
    assert "annulé au bout de 45 minutes" in data
    assert "200 jours, puis effacés" in data
    # the erasure of personal data (services/common/retention.py), each period from its setting
    assert "400 jours après le jour du rendez-vous, puis effacés" in data
    assert "400 jours après la tentative ou l'attestation, puis effacées" in data
    assert "300 jours après la clôture de la demande, puis effacés" in data
    assert "60 jours après le courriel, puis effacés" in data
    assert "400 jours après la prise du rendez-vous, puis effacés" in data
    assert "300 jours après l'invitation, puis effacés" in data
    assert "remplacé en entier à chaque import" in data
    assert "aucun effacement automatique" not in data  # no longer true of anything
    assert "pref-etrangers@herault.gouv.fr" in data and "CNIL" in data
    english = unescape(http.get("/donnees-personnelles", params={"lang": "en"}).text)
    assert "cancelled after 45 minutes" in english and "200 days, then deleted" in english
    assert "400 days after the day of the appointment, then erased" in english
    assert "300 days after the request closed, then erased" in english
    assert "60 days after the e-mail, then erased" in english
    arabic = unescape(http.get("/donnees-personnelles", params={"lang": "ar"}).text)
    assert "400 يومًا بعد يوم الموعد" in arabic and "60 يومًا بعد الرسالة" in arabic
    legal = unescape(http.get("/mentions-legales", params={"lang": "fr"}).text)
    assert "Hébergeur d'essai, 1 rue de l'Exemple, 34000 Montpellier" in legal
    assert "Directeur de la publication : le préfet de l'Hérault" in legal
    statement = unescape(http.get("/accessibilite", params={"lang": "fr"}).text)
    assert "Ce site est non conforme" in statement and "Contenus non accessibles" in statement


def test_the_fairness_page_has_the_header_navigation_and_language_of_every_page(http, site):
    home = http.get("/").text
    assert 'href="/fairness"' in home.split("<main")[1]  # linked from the home page itself
    page = http.get("/fairness")
    assert page.status_code == 200
    # the same for everyone in a language: cacheable per cookie, never with a language cookie
    assert page.headers["Cache-Control"].startswith("public") and page.headers["Vary"] == "Cookie"
    text = unescape(page.text)
    assert '<header role="banner" class="fr-header">' in text and 'class="fr-logo"' in text
    assert 'aria-current="page">Équité des rendez-vous</a>' in text
    assert 'href="/fairness?lang=en"' in text  # the language selector
    assert "<h1>Équité des rendez-vous</h1>" in text and "Renouvellement de titre de séjour" in text
    english = http.get("/fairness", params={"lang": "en"})
    assert english.headers["Cache-Control"] == "no-store"  # it sets the language cookie
    assert "<h1>Fairness of appointments</h1>" in english.text
    assert "Renewal of a residence permit" in english.text
    assert "Renouvellement de titre de séjour" not in english.text
    again = http.get("/fairness")  # the cookie remembers English
    assert '<html lang="en">' in again.text and again.headers["Vary"] == "Cookie"
