"""The convocation an applicant prints and shows at the desk: an HTML page and a PDF.

Both carry the exact name, the procedure, the slot in Europe/Paris, the site's address, the
free-appointment warning (M5) and the signed code as a QR code and as text; the booking
service signs it (services/booking/rules.py convocation_fields), the desk verifies it.
"""
import io
import logging
from pathlib import Path

import segno
from fpdf import FPDF

from gateway.html import page_response
from gateway.public.pages import ENV
from services.common.reference_data import FREE_NOTICE, SITES, procedure_view
from services.common.timeutil import PARIS, parse_iso

log = logging.getLogger(__name__)

# fpdf2's core fonts are Latin-1 only: names such as "Łukasz" or "Nguyễn" need a Unicode font
# (Debian's fonts-dejavu-core, in the image too); without it the PDF still comes, transliterated
UNICODE_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _values(conv):
    start = parse_iso(conv["slot_start"]).astimezone(PARIS)
    site = SITES.get(conv["site"], {"label": conv["site"], "address": ""})
    return {"conv": conv, "procedure": procedure_view(conv["procedure"]), "site": site,
            "date": start.strftime("%d/%m/%Y"), "time": start.strftime("%H:%M"),
            "notice": FREE_NOTICE}


def _qr(code):
    return segno.make(code, error="m")


def html(conv):
    body = ENV.get_template("convocation.html.j2").render(
        qr_svg=_qr(conv["code"]).svg_inline(scale=4, title="Code de la convocation", omitsize=False),
        **_values(conv))
    return page_response(body)


def pdf(conv):
    v = _values(conv)
    doc = FPDF(format="A4")
    doc.set_title(f"Convocation {conv['reference']}")
    doc.add_page()
    if UNICODE_FONT.exists():
        doc.add_font("DejaVu", "", str(UNICODE_FONT))
        doc.set_font("DejaVu", size=11)
        text = str
    else:
        log.warning("%s missing: the PDF convocation falls back to Latin-1", UNICODE_FONT)
        doc.set_font("helvetica", size=11)
        text = lambda s: s.encode("latin-1", "replace").decode("latin-1")  # noqa: E731

    def para(line, size=11, height=6):
        doc.set_font_size(size)
        doc.multi_cell(0, height, text(line), new_x="LMARGIN", new_y="NEXT")

    para(v["site"]["label"], 10)
    para("Convocation / Appointment letter", 18, 10)
    para(f"Référence / Reference : {conv['reference']}", 13, 8)
    para(f"Nom / Family name : {conv['family_name']}", 13, 8)
    para(f"Prénom(s) / Given names : {conv['given_names']}", 13, 8)
    para(f"Démarche / Procedure : {v['procedure']['label_fr']} / {v['procedure']['label_en']}")
    para(f"Le {v['date']} à {v['time']} (heure de Paris / Paris time)", 13, 8)
    para(f"Lieu / Place : {v['site']['label']}, {v['site']['address']}")
    doc.ln(2)
    para("Présentez cette convocation et une pièce d'identité au nom exact ci-dessus. / "
         "Bring this letter and an identity document in the exact name above.")
    doc.ln(2)
    png = io.BytesIO()
    _qr(conv["code"]).save(png, kind="png", scale=4, border=2)
    png.seek(0)
    doc.image(png, w=55)
    para(f"Code : {conv['code']}", 8, 4)
    doc.ln(3)
    para(v["notice"]["fr"], 11)
    para(v["notice"]["en"], 11)
    return bytes(doc.output())
