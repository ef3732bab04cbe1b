"""Procedures (motifs) and sites: reference data every part of the system agrees on."""

# Renewals are filed by people already known to the prefecture: their foreigner number
# (AGDREF) is required so that staff can find their file.
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
        # M6: these applicants may also come without an appointment
        "walk_in": {
            "weekdays": ["monday", "tuesday", "thursday", "friday"],
            "mornings_only": True,
            "fr": "Pour renouveler une carte de résident de 10 ans, vous pouvez aussi vous présenter "
                  "sans rendez-vous n'importe quel matin, sauf le mercredi.",
            "en": "To renew a 10-year resident card, you may also come without an appointment "
                  "any morning except Wednesday.",
        },
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
    },
    "beziers": {
        "label": "Sous-préfecture de Béziers, guichet des étrangers",
        "address": "Boulevard Édouard Herriot, 34500 Béziers",
    },
}

# M5: shown on every booking answer and in every message.
FREE_NOTICE = {
    "fr": "Les rendez-vous de la préfecture sont gratuits. Personne n'a le droit de les vendre : "
          "refusez toute offre payante et signalez-la à la préfecture.",
    "en": "Appointments at the prefecture are free. Nobody may sell them: refuse any offer "
          "to buy one and report it to the prefecture.",
}


def procedure_view(code):
    entry = PROCEDURES[code]
    view = {"code": code, "label_fr": entry["label_fr"], "label_en": entry["label_en"],
            "requires_foreigner_number": entry["requires_foreigner_number"]}
    if "walk_in" in entry:
        view["walk_in"] = dict(entry["walk_in"])
    return view
