"""Small helpers for the domain figures the services report (monitoring, fairness page)."""
from datetime import timedelta
from statistics import median as _median

from services.common.timeutil import PARIS


def median(values):
    values = [v for v in values if v is not None]
    return _median(values) if values else None


def week_of(moment):
    """The Monday (Europe/Paris) of the week of an aware datetime, as an ISO date."""
    local = moment.astimezone(PARIS).date()
    return (local - timedelta(days=local.weekday())).isoformat()


def rounded(value, digits=1):
    return None if value is None else round(value, digits)
