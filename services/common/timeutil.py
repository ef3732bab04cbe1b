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


# calendar names for dates written out in full, in the languages applicants read
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
FR_DAYS = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]
FR_MONTHS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
             "septembre", "octobre", "novembre", "décembre"]
EN_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
EN_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December"]
# Modern Standard Arabic, as CLDR's "ar" has them; digits stay 0-9, as in the Maghreb and in
# France's documents
AR_DAYS = ["الاثنين", "الثلاثاء", "الأربعاء", "الخميس", "الجمعة", "السبت", "الأحد"]
AR_MONTHS = ["يناير", "فبراير", "مارس", "أبريل", "مايو", "يونيو", "يوليو", "أغسطس",
             "سبتمبر", "أكتوبر", "نوفمبر", "ديسمبر"]


def long_date(day, lang):
    """'mardi 4 mars 2027', 'Tuesday 4 March 2027' or 'الخميس 4 مارس 2027' for a date (or
    a local datetime)."""
    if lang == "ar":
        return f"{AR_DAYS[day.weekday()]} {day.day} {AR_MONTHS[day.month - 1]} {day.year}"
    if lang == "fr":
        return f"{FR_DAYS[day.weekday()]} {day.day} {FR_MONTHS[day.month - 1]} {day.year}"
    return f"{EN_DAYS[day.weekday()]} {day.day} {EN_MONTHS[day.month - 1]} {day.year}"
