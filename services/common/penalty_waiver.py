"""M7 penalty waiver, in one place: is the late-filing penalty waived? A plain function over
dates and recorded attempts. The booking service, which owns the attempts, answers it
(`booking.penalty_waiver`, what the staff gateway's waiver page shows); the requests service
reads the same two-month grace to put an expired permit first in line (`within_grace`).

The rule (README, "Penalty waiver (M7)"): a permit holder who files after the permit expired
pays no late-filing penalty when both hold:
1. in time: the filing date is no later than two calendar months after the expiry date. "Two
   months" is calendar months: the same day number two months on (15 March -> 15 May); when
   that month has no such day, its last day (31 December -> 28 or 29 February). Filing on that
   day is in time, the day after is not.
2. evidence: at least one failed booking attempt is on record (booking service, `attempts`,
   recorded only while nothing was bookable) on or before the expiry date, a Paris calendar
   day: proof that no appointment could be had before the permit ran out. Attempts made after
   the expiry are listed but do not count.
Filing on or before the expiry date is not late: there is no penalty to waive.
"""
import calendar
from datetime import date

from services.common.timeutil import PARIS, parse_iso

GRACE_MONTHS = 2  # no late-filing penalty within two calendar months of the expiry


def add_months(day, months):
    """`day` plus calendar months; the last day of the month when the day number is missing."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def filing_deadline(expiry):
    """The last filing day that is still in time: two calendar months after the expiry."""
    return add_months(expiry, GRACE_MONTHS)


def within_grace(expiry, today):
    """An expired permit whose holder still escapes the late-filing penalty: filing `today`
    would be late but in time."""
    return expiry < today <= filing_deadline(expiry)


def attempt_day(attempt):
    """The Paris calendar day of a recorded attempt (`at`: ISO 8601)."""
    return parse_iso(attempt["at"]).astimezone(PARIS).date()


def waiver(expiry, filing, attempts):
    """The answer for one applicant: waived or not, and each condition with its reason.

    expiry, filing: dates; attempts: [{reference, procedure, at}] as the booking service lists
    them. Returns {waived, late, deadline, in_time: {holds, text}, evidence: {holds, text,
    attempts, after_expiry}, summary}.
    """
    deadline = filing_deadline(expiry)
    before = [a for a in attempts if attempt_day(a) <= expiry]
    after = [a for a in attempts if attempt_day(a) > expiry]
    late = filing > expiry
    in_time = filing <= deadline
    days_late = (filing - expiry).days
    if in_time:
        time_text = (f"Dépôt le {filing:%d/%m/%Y}, au plus tard le {deadline:%d/%m/%Y} "
                     f"(deux mois après l'expiration du {expiry:%d/%m/%Y}) : condition remplie.")
    else:
        time_text = (f"Dépôt le {filing:%d/%m/%Y}, après le {deadline:%d/%m/%Y} (deux mois après "
                     f"l'expiration du {expiry:%d/%m/%Y}) : condition non remplie.")
    if before:
        evidence_text = (f"{len(before)} tentative(s) sans rendez-vous disponible enregistrée(s) "
                         f"au plus tard le jour de l'expiration : condition remplie.")
    else:
        evidence_text = ("Aucune tentative enregistrée au plus tard le jour de l'expiration "
                         f"({expiry:%d/%m/%Y}) : condition non remplie.")
    if not late:
        summary = "Pas de retard : le dépôt a lieu avant l'expiration, aucune pénalité."
    elif in_time and before:
        summary = "Pénalité de dépôt tardif levée : les deux conditions sont remplies."
    else:
        summary = "Pénalité de dépôt tardif maintenue : une condition au moins n'est pas remplie."
    return {"waived": late and in_time and bool(before), "late": late,
            "days_late": max(0, days_late), "expiry": expiry.isoformat(),
            "filing": filing.isoformat(), "deadline": deadline.isoformat(),
            "in_time": {"holds": in_time, "text": time_text},
            "evidence": {"holds": bool(before), "text": evidence_text, "attempts": before,
                         "after_expiry": after},
            "summary": summary}



