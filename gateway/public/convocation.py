"""The convocation an applicant prints and shows at the desk: an HTML page and a PDF.

Both carry the exact name, the procedure, the slot in Europe/Paris, the site's address, the
free-appointment warning (M5) and the signed code as a QR code and as text; the booking
service signs it (services/booking/convocations.py convocation_fields), the desk verifies it.
"""
import io
import logging
from pathlib import Path

import segno
from werkzeug.wrappers import Response

from services.common.reference_data import FREE_NOTICE, SITES, documents, procedure_view
from services.common.timeutil import PARIS, long_date, parse_iso

log = logging.getLogger(__name__)

# fpdf2's core fonts are Latin-1 only: names such as "Łukasz" or "Nguyễn" need a Unicode font
# (Debian's fonts-dejavu-core, in the image too); without it the PDF still comes, transliterated
UNICODE_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _values(conv):
    start = parse_iso(conv["slot_start"]).astimezone(PARIS)
    site = SITES.get(conv["site"], {"label": conv["site"], "address": ""})
    return {"conv": conv, "procedure": procedure_view(conv["procedure"]), "site": site,
            "date": start.strftime("%d/%m/%Y"), "time": start.strftime("%H:%M"),
            "long_date_fr": long_date(start, "fr"), "long_date_en": long_date(start, "en"),
            # French and English side by side: the desk reads one, the applicant the other
            "documents": list(zip(documents(conv["procedure"], "fr"),
                                  documents(conv["procedure"], "en"))),
            "notice": FREE_NOTICE}


def _qr(code):
    return segno.make(code, error="m")


def qr_svg(content, title):
    """The QR code of `content` as inline SVG for a page, with its accessible title; it scales
    with the screen (a viewBox, no fixed size: the stylesheet sets its width)."""
    return _qr(content).svg_inline(scale=4, title=title, omitsize=True)


def html(current, conv):
    """The convocation as one of the site's pages (gateway/public/pages.py Page): its header,
    warning and stylesheet."""
    return current.render("convocation.html.j2", qr_svg=qr_svg(conv["code"], "Code de la convocation"),
                          **_values(conv))


def printable(title):
    """An A4 PDF with one page begun in a Unicode font, and `para(line, size, height)` that writes
    a paragraph in it (the attestation of attempts uses it too)."""
    # imported here: fpdf brings fontTools and PIL, some 30 MB that a gateway printing no PDF
    # never needs (issue 22)
    from fpdf import FPDF

    doc = FPDF(format="A4")
    doc.set_title(title)
    doc.add_page()
    if UNICODE_FONT.exists():
        doc.add_font("DejaVu", "", str(UNICODE_FONT))
        doc.set_font("DejaVu", size=11)
        text = str
    else:
        log.warning("%s missing: the PDF falls back to Latin-1", UNICODE_FONT)
        doc.set_font("helvetica", size=11)
        text = lambda s: s.encode("latin-1", "replace").decode("latin-1")  # noqa: E731

    def para(line, size=11, height=6):
        doc.set_font_size(size)
        doc.multi_cell(0, height, text(line), new_x="LMARGIN", new_y="NEXT")
    return doc, para


def qr_image(doc, content, width=55):
    """The QR code of `content` drawn into the PDF."""
    png = io.BytesIO()
    _qr(content).save(png, kind="png", scale=4, border=2)
    png.seek(0)
    doc.image(png, w=width)


def pdf_response(conv, recipient=None):
    """The convocation's PDF as an HTTP answer."""
    return pdf_answer(pdf(conv, recipient), f"convocation-{conv['reference']}.pdf")


def pdf_answer(body, filename):
    """A printable PDF (convocation, attestation) as an HTTP answer: personal data, so never
    cached."""
    return Response(body, content_type="application/pdf", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{filename}"'})


def pdf(conv, recipient=None):
    """recipient: the lines of a postal address, printed first where a window envelope shows
    them (a convocation an agent posts to a person without e-mail, issue 21)."""
    v = _values(conv)
    doc, para = printable(f"Convocation {conv['reference']}")
    para(v["site"]["label"], 10)
    if recipient:
        doc.set_x(110)
        para("\n".join(recipient), 11, 6)
        doc.ln(8)
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
    qr_image(doc, conv["code"])
    para(f"Code : {conv['code']}", 8, 4)
    doc.ln(3)
    para("À apporter / What to bring :", 12, 7)
    for fr, en in v["documents"]:
        para(f"- {fr} / {en}", 10, 5)
    doc.ln(3)
    para(v["notice"]["fr"], 11)
    para(v["notice"]["en"], 11)
    return bytes(doc.output())
