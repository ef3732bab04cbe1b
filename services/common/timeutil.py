"""Times are stored in UTC and shown in Europe/Paris (DESIGN.md section 3)."""
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")


def utcnow():
    return datetime.now(timezone.utc)


def as_utc(value):
    """A datetime in UTC; naive values are taken as UTC (how pymongo returns them by default)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def iso_utc(value):
    return as_utc(value).isoformat().replace("+00:00", "Z")


def iso_paris(value):
    return as_utc(value).astimezone(PARIS).isoformat()


def parse_iso(text):
    """Parse an ISO 8601 timestamp that carries an offset (or Z) into an aware UTC datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without offset: {text!r}")
    return parsed.astimezone(timezone.utc)
