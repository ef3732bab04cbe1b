"""Event envelope: every payload carries an event_id and a UTC timestamp (DESIGN.md section 2)."""
import uuid

from services.common.timeutil import iso_utc, utcnow


def envelope(event_id=None, occurred_at=None, **fields):
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "occurred_at": iso_utc(occurred_at or utcnow()),
        **fields,
    }
