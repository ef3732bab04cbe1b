"""One shape for what staff-facing RPCs answer (the staff gateway shows it as it comes).

`id` instead of MongoDB's `_id`; times as ISO-8601 UTC text (`at_ts` epoch seconds become
`at`, datetimes become text); bookkeeping of the delivery machinery (`outbox`, leases) left
out.
"""
from datetime import datetime, timezone

from services.common.timeutil import iso_utc

HIDDEN = frozenset({"_id", "outbox", "lease_ts", "claim"})


def iso_from_ts(ts):
    return iso_utc(datetime.fromtimestamp(ts, timezone.utc)) if ts is not None else None


def _value(value):
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, dict):
        return staff_view(value, top=False)
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


def staff_view(doc, top=True):
    view = {"id": doc["_id"]} if top and "_id" in doc else {}
    for key, value in doc.items():
        if key in HIDDEN and (top or key != "_id"):
            continue
        if key.endswith("_ts") and isinstance(value, (int, float)) and not isinstance(value, bool):
            view[key[:-3]] = iso_from_ts(value)
        else:
            view[key] = _value(value)
    return view
