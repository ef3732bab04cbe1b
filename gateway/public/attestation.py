"""The attestation of failed booking attempts (M7) as a person uses it: a page and a PDF to
print or show, and what the public verify page may say about a code.

Like the convocation (gateway/public/convocation.py, whose PDF and QR set-up this reuses): the
booking service signs it (services/booking/evidence.py) and keeps it under a short
verification code; the QR holds the public verify page's address with that code, so a phone
opens the answer and a desk scanner types it into the staff check.
"""
from gateway.public import convocation
from services.common import i18n
from services.common.reference_data import FREE_NOTICE, WAIVER_RULE, procedure_view
from services.common.timeutil import PARIS, long_date, parse_iso


def verify_url(base_url, code):
    """The public verify page's address for a code: what the QR holds."""
    return f"{base_url.rstrip('/')}/attestations/verify?code={code}"


def _local(iso):
    return parse_iso(iso).astimezone(PARIS)


def values(fields, lang):
    """What the page, the PDF and the verify pages show of an attestation's signed fields."""
    attempts = []
    for attempt in fields.get("attempts", []):
        at = _local(attempt["at"])
        attempts.append({"reference": attempt["reference"],
                         "procedure": procedure_view(attempt["procedure"]),
                         "date": long_date(at, lang), "day": at.strftime("%d/%m/%Y"),
                         "time": at.strftime("%H:%M")})
    procedures = []
    for attempt in attempts:
        if attempt["procedure"] not in procedures:
            procedures.append(attempt["procedure"])
    issued = _local(fields["issued_at"])
    return {"applicant": fields.get("applicant", {}), "issuer": fields.get("issuer", ""),
            "attempts": attempts, "procedures": procedures,
            "issued_date": long_date(issued, lang), "issued_day": issued.strftime("%d/%m/%Y"),
            "issued_time": issued.strftime("%H:%M"), "rule": i18n.with_langs(WAIVER_RULE),
            "notice": FREE_NOTICE}


def masked(applicant):
    """The applicant as the public verify page shows them: enough for whoever holds the paper
    to see it is the same person, not enough to learn a number or an address from a code."""
    number, email = applicant.get("foreigner_number"), applicant.get("email") or ""
    local, _, domain = email.partition("@")
    return {"number_end": number[-3:] if number else None,
            "email": f"{local[:1]}…@{domain}" if domain else None}


def page(current, document, reference, base_url):
    """The attestation page of the holder of a receipt token (`reference`: their receipt's)."""
    url = verify_url(base_url, document["code"])
    title = current.t("Code de vérification de l'attestation", "Attestation verification code")
    return current.render("attestation.html.j2", code=document["code"], reference=reference,
                          qr_svg=convocation.qr_svg(url, title),
                          **values(document["attestation"], current.lang))


def pdf(document, base_url):
    """The same as a PDF, French and English, with the QR and the code."""
    code = document["code"]
    v = values(document["attestation"], "fr")
    doc, para = convocation.printable(f"Attestation {code}")
    para(v["issuer"], 10)
    para("Attestation de tentatives de prise de rendez-vous / "
         "Attestation of booking attempts", 16, 9)
    para("Aucun rendez-vous n'était disponible lors de chacune de ces tentatives. / "
         "No appointment was available at each of these attempts.")
    doc.ln(2)
    number = v["applicant"].get("foreigner_number")
    para(f"Numéro d'étranger / Foreigner number : {number or 'aucun / none'}", 12, 7)
    para(f"Adresse électronique / E-mail : {v['applicant'].get('email', '')}", 12, 7)
    doc.ln(2)
    para("Tentatives (heure de Paris) / Attempts (Paris time) :", 12, 7)
    for a in v["attempts"]:
        para(f"• {a['day']} {a['time']} – {a['procedure']['label_fr']} / "
             f"{a['procedure']['label_en']} – {a['reference']}")
    doc.ln(2)
    para(f"Délivrée le / Issued on {v['issued_day']} {v['issued_time']} (heure de Paris / Paris time)")
    para(v["rule"]["fr"], 10, 5)
    para(v["rule"]["en"], 10, 5)
    doc.ln(2)
    convocation.qr_image(doc, verify_url(base_url, code), width=45)
    para(f"Code de vérification / Verification code : {code}", 13, 8)
    para(f"Vérifier / Verify : {base_url.rstrip('/')}/attestations/verify", 9, 5)
    doc.ln(2)
    para(v["notice"]["fr"], 10, 5)
    para(v["notice"]["en"], 10, 5)
    return bytes(doc.output())
