"""Server-rendered staff pages (French first): Jinja2 templates, no script, one CSS file."""
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from werkzeug.wrappers import Response

from gateway.html import page_response
from services.common.reference_data import PROCEDURES, SITES
from services.common.timeutil import PARIS, parse_iso

HERE = Path(__file__).parent
ENV = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True,
                  undefined=StrictUndefined)
CSS = (HERE / "static" / "admin.css").read_bytes()

STATUS_FR = {"pending": "Non confirmé", "active": "Attendu", "checked_in": "Reçu",
             "cancelled": "Annulé"}
REASON_FR = {
    "applicant": "annulé par la personne",
    "multiple_bookings_same_email": "plusieurs rendez-vous avec une même adresse (fraude)",
    "multiple_bookings_same_person": "deux rendez-vous pour une même personne (le premier est gardé)",
    "name_not_exact": "nom non exact à la réservation (fraude)",
    "slot_grabbing": "captation automatisée (fraude)",
    "name_mismatch": "nom différent de la pièce d'identité au guichet",
    "staff": "annulé par la préfecture",
    "not_confirmed": "non confirmé depuis le courriel à temps",
    "email_already_used": "adresse déjà utilisée pour un autre rendez-vous confirmé",
    "pending": "pas encore confirmé depuis le courriel",
    "other_site": "rendez-vous sur un autre site",
    "other_day": "rendez-vous un autre jour",
    "cancelled": "rendez-vous annulé",
}
FRAUD_REASONS = ("multiple_bookings_same_email", "multiple_bookings_same_person", "name_not_exact",
                 "slot_grabbing")
# every code a staff page would otherwise show raw, in French (tests/integration look for them)
ROLE_FR = {"agent": "agent", "supervisor": "superviseur"}
RULE_FR = {"multiple_bookings_same_email": "plusieurs personnes, une adresse e-mail (M3)",
           "multiple_bookings_same_person": "une personne, plusieurs rendez-vous (M3)",
           "name_not_exact": "nom non exact (M4)", "slot_grabbing": "captation de créneaux",
           "name_mismatch": "nom différent au guichet (M4)"}
FRAUD_ACTION_FR = {"cancel": "annulation", "cancelled": "annulée", "review": "examen",
                   "cleared": "gardée", "clear": "gardée", "open": "à décider"}
MAIL_STATE_FR = {"pending": "en attente", "in_progress": "en cours", "retrying": "en reprise",
                 "done": "envoyés", "parked": "en échec"}
AUDIT_ACTION_FR = {
    "login": "connexion", "login_failed": "connexion refusée (mot de passe)",
    "login_refused_locked": "connexion refusée (compte verrouillé)", "logout": "déconnexion",
    "account_created": "compte créé", "account_locked": "compte verrouillé",
    "account_unlocked": "compte déverrouillé", "password_reset": "mot de passe réinitialisé",
    "password_changed": "mot de passe changé", "check_in": "arrivée enregistrée",
    "check_in_name_mismatch": "nom différent au guichet",
    "walk_in_registered": "accueil sans rendez-vous", "plan_created": "plan créé",
    "extra_plan_opened": "capacité supplémentaire ouverte", "desks_added": "guichets ajoutés",
    "release_rescheduled": "publication déplacée", "review_cancel": "examen : annulation",
    "review_clear": "examen : gardée", "allow_list_added": "exemption ajoutée",
    "allow_list_removed": "exemption retirée", "waiver_answered": "pénalité : réponse donnée",
    "message_resent": "message renvoyé", "request_mode_switched": "mode d'attribution changé",
    "partner_created": "partenaire créé", "partner_suspended": "partenaire suspendu",
    "partner_renewed": "partenaire renouvelé", "desk_request": "demande déposée à l'accueil",
    "desk_offer_accepted": "proposition acceptée pour la personne",
    "offer_letter_printed": "lettre de proposition imprimée",
    "register_imported": "registre des titres importé",
    "register_previewed": "registre des titres : aperçu",
    "visas_imported": "registre des visas importé",
    "visas_previewed": "registre des visas : aperçu",
}
# what each service's outbox announces (monitoring's backlog)
OUTBOX_FR = {"created": "réservations créées", "confirmed": "confirmations",
             "cancelled": "annulations", "checked_in": "arrivées", "recorded": "tentatives",
             "filed": "demandes déposées", "made": "offres"}
# what an audit entry's before/after values may hold, as words
VALUE_FR = dict(STATUS_FR, **ROLE_FR, open="réservation directe", requests="sur demande")
LINK_FR = {"email": "même adresse e-mail que", "identity+address":
           "même personne, depuis la même adresse réseau, que",
           "identity": "même personne (autre e-mail, autre adresse) que",
           "address": "seule l'adresse réseau est partagée avec"}


def label(code):
    """The French words for any code a page shows (procedure, reason, rule, role, state...)."""
    if code in PROCEDURES:
        return PROCEDURES[code]["label_fr"]
    for table in (RULE_FR, REASON_FR, AUDIT_ACTION_FR, VALUE_FR, FRAUD_ACTION_FR, MAIL_STATE_FR):
        if code in table:
            return table[code]
    return code


def evidence_fr(evidence):
    """Fraud's evidence in French, from its structured fields (fraud's own summary is English
    text): what a supervisor reads before deciding."""
    evidence = evidence or {}
    signals, lines = evidence.get("signals") or {}, []
    if "identities_same_address" in signals:
        lines.append(f"{signals['identities_same_address']} personnes différentes ont réservé "
                     "depuis une même adresse réseau en peu de temps. Un opérateur mobile, une "
                     "association ou une bibliothèque donnent la même image : l'adresse seule "
                     "ne prouve rien.")
    if "bookings_same_address_after_release" in signals:
        lines.append(f"{signals['bookings_same_address_after_release']} réservations de cette "
                     "adresse sont arrivées juste après une publication.")
    if "booked_within_seconds" in signals:
        seconds = f"{signals['booked_within_seconds']:.1f}".replace(".", ",")
        lines.append(f"Réservé {seconds} s après la publication de la place.")
    if "identities_same_user_agent" in signals:
        lines.append(f"{signals['identities_same_user_agent']} personnes ont réservé avec la "
                     "même signature de navigateur.")
    if evidence.get("link") in LINK_FR:
        lines.append(f"{LINK_FR[evidence['link']].capitalize()} la réservation "
                     f"{evidence.get('linked_to', '')}, qui a pris un créneau leurre.")
    elif evidence.get("decoy_slot"):
        lines.append("Créneau leurre réservé : les pages publiques ne le proposent jamais, "
                     "l'API JSON le montre. Un script, ou une personne qui utilise l'API "
                     "honnêtement : à examiner, jamais annulé d'office.")
    if evidence.get("kept"):
        lines.append(f"Même adresse e-mail que d'autres personnes ; réservation gardée : "
                     f"{evidence['kept']}.")
    return lines


def local_time(iso, fmt="%H:%M"):
    return parse_iso(iso).astimezone(PARIS).strftime(fmt) if iso else ""


ENV.filters["local"] = local_time
ENV.filters["label"] = label
ENV.globals.update(STATUS_FR=STATUS_FR, REASON_FR=REASON_FR, SITES=SITES, PROCEDURES=PROCEDURES,
                   ROLE_FR=ROLE_FR, MAIL_STATE_FR=MAIL_STATE_FR, OUTBOX_FR=OUTBOX_FR, evidence_fr=evidence_fr)


def render(template, status=200, headers=None, **values):
    values.setdefault("staff", None)
    values.setdefault("csrf", "")
    return page_response(ENV.get_template(template).render(**values), status=status,
                         headers=headers)


def redirect(location, status=303):
    response = page_response("", status=status)
    response.headers["Location"] = location
    return response


def css():
    return Response(CSS, content_type="text/css; charset=utf-8",
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})
