"""M6 walk-ins, in one place: who may come without an appointment, on which days and at which
hours, and every message that says so (the public pages' notice, the counter's rule and its
refusals), built from the one rule below and the configured hours (`WALK_IN_HOURS`).

The booking service applies it at the counter (`register_walk_in`, `walk_in_rule`);
services/common/reference_data.py shows it with the procedure (the API's `walk_in`).
"""
from services.common import i18n
from services.common.timeutil import AR_DAYS, EN_DAYS, FR_DAYS, PARIS, WEEKDAYS, as_utc

OPEN_WEEK = WEEKDAYS[:5]  # the prefecture's desks open Monday to Friday
NOON = (12, 0)

# per procedure: the days a walk-in is received, whether only in the morning (the configured
# hours must then end by noon), and what the rule covers as the notices word it
RULES = {
    "renewal_10y": {
        "weekdays": ["monday", "tuesday", "thursday", "friday"],
        "mornings_only": True,
        "purpose": {"fr": "Pour renouveler une carte de résident de 10 ans",
                    "en": "To renew a 10-year resident card"},
        "only": {"fr": "le renouvellement de la carte de résident de 10 ans",
                 "en": "renewal of a 10-year resident card"},
    },
}


def closed_days(rule):
    """The weekdays of an open week the rule turns walk-ins away."""
    return [day for day in OPEN_WEEK if day not in rule["weekdays"]]


def _except(rule, lang):
    days = {"fr": FR_DAYS, "ar": AR_DAYS}.get(lang, EN_DAYS)
    names = [days[WEEKDAYS.index(d)] for d in closed_days(rule)]
    if not names:
        return ""
    if lang == "fr":
        return ", sauf " + " et ".join(f"le {name}" for name in names)
    if lang == "ar":
        return "، ما عدا " + " و".join(f"يوم {name}" for name in names)
    return " except " + " and ".join(names)


# the notice's sentence and its parts as (fr, en): other languages from the catalogue
# (services/common/i18n.py), the closed days named by _except
NOTICE = ("%(purpose)s, vous pouvez aussi vous présenter sans rendez-vous %(when)s%(except)s.",
          "%(purpose)s, you may also come without an appointment %(when)s%(except)s.")
ANY_MORNING, ANY_DAY = ("n'importe quel matin", "any morning"), ("n'importe quel jour", "any day")


def notice(code):
    """What the public pages and the API say of the procedure's walk-ins: {weekdays,
    mornings_only, fr, en, ar}."""
    rule = RULES[code]
    when = ANY_MORNING if rule["mornings_only"] else ANY_DAY
    notice = {"weekdays": list(rule["weekdays"]), "mornings_only": rule["mornings_only"]}
    for lang in i18n.LANGS:
        notice[lang] = i18n.translate(lang, *NOTICE) % {
            "purpose": i18n.pick(rule["purpose"], lang), "when": i18n.translate(lang, *when),
            "except": _except(rule, lang)}
    return notice


def parse_hours(text):
    """"08:30-12:00" -> ((8, 30), (12, 0)); ValueError when malformed or empty."""
    try:
        start, end = (tuple(int(p) for p in part.strip().split(":")) for part in text.split("-"))
        if len(start) != 2 or len(end) != 2 or not (0, 0) <= start < end <= (24, 0) \
                or start[1] > 59 or end[1] > 59:
            raise ValueError
    except (ValueError, AttributeError):
        raise ValueError(f"hours are HH:MM-HH:MM, got {text!r}") from None
    return start, end


def checked_hours(hours_text):
    """The configured hours, parsed; ValueError when malformed, or past noon for a rule of
    mornings only: a misconfiguration shows in the error, not as a silent "no"."""
    start, end = parse_hours(hours_text)
    if end > NOON and any(rule["mornings_only"] for rule in RULES.values()):
        raise ValueError(f"walk-ins are received in the morning only: hours end by 12:00, "
                         f"got {hours_text!r}")
    return start, end


def rule_text(hours_text):
    """The counter's rule, in French then English."""
    fr, en = [], []
    for rule in RULES.values():
        morning = rule["mornings_only"]
        fr.append(f"uniquement {rule['only']['fr']}, {'le matin ' if morning else ''}"
                  f"de {hours_text.replace('-', ' à ')}{_except(rule, 'fr')}")
        closed = closed_days(rule)
        en.append(f"{rule['only']['en']} only, {'mornings' if morning else 'hours'} {hours_text}"
                  + (", never on " + " or ".join(EN_DAYS[WEEKDAYS.index(d)] for d in closed)
                     if closed else ""))
    return f"Sans rendez-vous : {'; '.join(fr)}. / Walk-ins: {'; '.join(en)}."


def refusal(procedure, now, hours_text):
    """Why a walk-in cannot be registered at `now` (aware datetime), or None when it can: the
    procedure's rule, its weekdays and the configured hours, in Europe/Paris."""
    rule = RULES.get(procedure)
    if rule is None:
        return "Cette démarche ne se fait que sur rendez-vous. " + rule_text(hours_text)
    local = as_utc(now).astimezone(PARIS)
    if WEEKDAYS[local.weekday()] not in rule["weekdays"]:
        return f"Pas d'accueil sans rendez-vous le {FR_DAYS[local.weekday()]}. " \
               + rule_text(hours_text)
    start, end = checked_hours(hours_text)
    if not start <= (local.hour, local.minute) < end:
        return f"Il est {local:%H:%M} : hors des heures d'accueil sans rendez-vous. " \
               + rule_text(hours_text)
    return None
