"""Procedures (motifs) and sites: reference data every part of the system agrees on."""
from services.common import i18n, walk_ins

# Renewals are filed by people already known to the prefecture: their foreigner number
# (AGDREF) is required so that staff can find their file.
# how a procedure's places are given: booked by whoever comes first, or by requests (issue 12)
MODES = ("open", "requests")

PROCEDURES = {
    "first_application": {
        "label_fr": "Première demande de titre de séjour",
        "label_en": "First application for a residence permit",
        "requires_foreigner_number": False,
    },
    "renewal": {
        "label_fr": "Renouvellement de titre de séjour",
        "label_en": "Renewal of a residence permit",
        "requires_foreigner_number": True,
    },
    "renewal_10y": {
        "label_fr": "Renouvellement de la carte de résident de 10 ans",
        "label_en": "Renewal of a 10-year resident card",
        "requires_foreigner_number": True,
        # M6: these applicants may also come without an appointment (the rule and its words:
        # services/common/walk_ins.py)
        "walk_in": walk_ins.notice("renewal_10y"),
    },
    "change_of_status": {
        "label_fr": "Changement de statut",
        "label_en": "Change of status",
        "requires_foreigner_number": False,
    },
    "duplicate": {
        "label_fr": "Duplicata de titre de séjour (perte, vol, détérioration)",
        "label_en": "Duplicate residence permit (lost, stolen, damaged)",
        "requires_foreigner_number": False,
    },
}

SITES = {
    "montpellier": {
        "label": "Préfecture de l'Hérault, guichet des étrangers",
        "address": "34 place des Martyrs de la Résistance, 34062 Montpellier",
        # a plain link for applicants to follow: the pages load nothing from the map site
        "map_url": "https://www.openstreetmap.org/search?query=34%20place%20des%20Martyrs%20de%20la%20R%C3%A9sistance%2C%2034000%20Montpellier",
    },
    "beziers": {
        "label": "Sous-préfecture de Béziers, guichet des étrangers",
        "address": "Boulevard Édouard Herriot, 34500 Béziers",
        "map_url": "https://www.openstreetmap.org/search?query=Boulevard%20%C3%89douard%20Herriot%2C%2034500%20B%C3%A9ziers",
    },
}

# M5's notice lives in services/common/free_notice.py; reference data passes it on
from services.common.free_notice import FREE_NOTICE  # noqa: E402,F401

# M7 as services/common/penalty_waiver.py applies it: attempts count only up to the permit's expiry day
# (pages, the attestation and e-mails all say it in these words)
WAIVER_RULE = {
    "fr": "Enregistrez vos tentatives avant l'expiration de votre titre de séjour : seules celles "
          "faites au plus tard le jour où il expire vous évitent la pénalité de dépôt tardif. "
          "Déposez ensuite votre demande dans les deux mois qui suivent l'expiration.",
    "en": "Record your attempts before your residence permit expires: only those made on or "
          "before its expiry day spare you the late-filing penalty. Then file your application "
          "within two months after expiry.",
}


def procedure_view(code):
    """A procedure as the API and the pages show it: its label in every language (`label_ar`
    from the catalogue: services/common/i18n.py), the walk-in notice likewise."""
    entry = PROCEDURES[code]
    view = {"code": code, "label_fr": entry["label_fr"], "label_en": entry["label_en"],
            "requires_foreigner_number": entry["requires_foreigner_number"]}
    for lang in i18n.LANGS:
        view.setdefault(f"label_{lang}", i18n.translate(lang, entry["label_fr"], entry["label_en"]))
    if "walk_in" in entry:
        view["walk_in"] = i18n.with_langs(entry["walk_in"])
    return view


# What to bring to the desk, per procedure, shown before booking and on the confirmation.
_ALWAYS = [
    ("votre passeport (ou une pièce d'identité de votre pays)", "your passport (or an identity document from your country)"),
    ("un justificatif de domicile de moins de 6 mois", "proof of address less than 6 months old"),
    ("3 photos d'identité récentes (norme ISO/IEC 19794-5)", "3 recent identity photos (ISO/IEC 19794-5 standard)"),
    ("votre convocation imprimée ou sur votre téléphone", "your appointment letter, printed or on your phone"),
]
_CURRENT_PERMIT = [("votre titre de séjour actuel", "your current residence permit")]
DOCUMENTS = {
    "first_application": _ALWAYS + [
        ("votre acte de naissance avec sa traduction par un traducteur agréé",
         "your birth certificate with a translation by a sworn translator"),
        ("votre visa ou le justificatif de votre entrée en France", "your visa or proof of your entry into France"),
    ],
    "renewal": _ALWAYS + _CURRENT_PERMIT,
    "renewal_10y": _ALWAYS + _CURRENT_PERMIT,
    "change_of_status": _ALWAYS + _CURRENT_PERMIT + [
        ("les pièces justifiant votre nouvelle situation (contrat de travail, diplôme...)",
         "documents proving your new situation (employment contract, diploma...)"),
    ],
    "duplicate": _ALWAYS + [
        ("la déclaration de perte ou de vol, ou le titre détérioré",
         "the report of loss or theft, or the damaged permit"),
        ("un timbre fiscal (le montant est indiqué sur service-public.fr)",
         "a tax stamp (the amount is given on service-public.fr)"),
    ],
}


def documents(code, lang):
    """The documents to bring for a procedure, in the language `lang` (services/common/i18n.py)."""
    return [i18n.translate(lang, fr, en) for fr, en in DOCUMENTS[code]]
