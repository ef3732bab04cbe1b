"""The register's rules as plain functions (no I/O): reading an export, the diff of an
import, the matching key, which permits are due an invitation and in what order.

The register holds two books, read and diffed by the same code (a `Book` says what differs):
- permits: foreigner_number, family_name, given_names, birth_date, permit_kind, expiry, and
  optionally email (renewals match them);
- long-stay visas (VLS-TS and the like, which most first applications follow): visa_number,
  family_name, given_names, birth_date, visa_kind, validity_end (first applications match them).
An export is CSV (comma or semicolon, UTF-8, a header line naming the columns in any order).
Dates are YYYY-MM-DD or DD/MM/YYYY (as the prefecture's software writes them). The first bad
line stops everything: an import is whole or not at all.
"""
import csv
import hashlib
import io
import re
from datetime import date, datetime, timedelta

from services.common.register_check import RENEWED_BY, match_key, visa_match_key, visa_number
from services.common.schemas import invisible_characters

REQUIRED = ("foreigner_number", "family_name", "given_names", "birth_date", "permit_kind",
            "expiry")
OPTIONAL = ("email",)
COLUMNS = REQUIRED + OPTIONAL
# the kinds of permit and the procedure that renews each (shared with requests, which
# compares it with the procedure filed for)
PERMIT_KINDS = RENEWED_BY
NUMBER = re.compile(r"^[0-9]{10}$")
EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
ENTRY_FIELDS = ("family_name", "given_names", "birth_date", "permit_kind", "expiry", "email")
MAX_NAME = 150
# the kinds of long-stay visa a first application follows (VLS-TS: visa de long séjour valant
# titre de séjour; vls: a long-stay visa whose holder asks the prefecture for a permit)
VISA_KINDS = {"vls_ts": "first_application", "vls": "first_application"}
VISA_NUMBER = re.compile(r"^[A-Z0-9]{6,20}$")
VISA_FIELDS = ("family_name", "given_names", "birth_date", "visa_kind", "validity_end")


class Book:
    """One book of the register: its export's columns, the column that keys a line, how a
    line reads (line, cells) -> (key, entry), the fields a diff compares, and the digest an
    entry is matched by (key, entry) -> hex."""

    def __init__(self, name, key, required, optional, read, fields, digest):
        self.name, self.key, self.read, self.fields, self.digest = name, key, read, fields, digest
        self.required, self.columns = required, required + optional


class ImportProblem(ValueError):
    """A line of the export that cannot be taken, and why (line 1 is the header)."""

    def __init__(self, line, field, reason):
        super().__init__(f"line {line}: {field}: {reason}")
        self.line, self.field, self.reason = line, field, reason


def _date(text):
    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            pass
    return None


def _text(line, field, value, required=True):
    value = (value or "").strip()
    if required and not value:
        raise ImportProblem(line, field, "empty")
    if invisible_characters(value):
        raise ImportProblem(line, field, "control or invisible characters")
    if value.startswith("$") or len(value) > MAX_NAME:
        raise ImportProblem(line, field, "not a name")
    return value


def parse_export(text, max_lines, book=None):  # book: PERMITS when None
    """{key: entry} from the export's text; ImportProblem at the first bad line.

    permits (the default book): {foreigner_number: entry}, entry: family_name, given_names,
    birth_date and expiry (YYYY-MM-DD), permit_kind, email (or None). visas: {visa_number:
    entry}, entry: family_name, given_names, birth_date and validity_end, visa_kind."""
    book = book or PERMITS
    if not isinstance(text, str) or not text.strip():
        raise ImportProblem(1, "_file", "empty file")
    text = text.lstrip("\ufeff")  # a spreadsheet's byte-order mark
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except csv.Error as exc:
        raise ImportProblem(1, "_header", f"not CSV ({exc})")
    missing = [c for c in book.required if c not in header]
    if missing:
        raise ImportProblem(1, "_header", "missing column(s): " + ", ".join(missing))
    unknown = [h for h in header if h not in book.columns]
    if unknown or len(set(header)) != len(header):
        raise ImportProblem(1, "_header", "unknown or repeated column(s): "
                            + ", ".join(unknown or header))
    entries = {}
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # a blank line (the last one, often)
            if len(entries) >= max_lines:
                raise ImportProblem(line, "_file", f"more than {max_lines} {book.name}")
            if len(row) != len(header):
                raise ImportProblem(line, "_line", f"{len(row)} fields, the header has {len(header)}")
            number, entry = book.read(line, dict(zip(header, row)))
            if number in entries:
                raise ImportProblem(line, book.key, "repeated (also on an earlier line)")
            entries[number] = entry
    except csv.Error as exc:
        raise ImportProblem(reader.line_num, "_line", f"not CSV ({exc})")
    if not entries:
        raise ImportProblem(1, "_file", f"no {book.name[:-1]} in the file")
    return entries


def _day(line, field, cells):
    day = _date((cells[field] or "").strip())
    if day is None or not date(1900, 1, 1) <= day <= date(2100, 1, 1):
        raise ImportProblem(line, field, "not a date (YYYY-MM-DD or DD/MM/YYYY)")
    return day.isoformat()


def _names(line, cells):
    return {"family_name": _text(line, "family_name", cells["family_name"]),
            # some passports carry no given name
            "given_names": _text(line, "given_names", cells["given_names"], required=False)}


def _permit(line, cells):
    number = (cells["foreigner_number"] or "").strip()
    if not NUMBER.match(number):
        raise ImportProblem(line, "foreigner_number", "not 10 digits")
    entry = _names(line, cells)
    for field in ("birth_date", "expiry"):
        entry[field] = _day(line, field, cells)
    kind = (cells["permit_kind"] or "").strip().lower()
    if kind not in PERMIT_KINDS:
        raise ImportProblem(line, "permit_kind", "one of " + ", ".join(PERMIT_KINDS))
    entry["permit_kind"] = kind
    email = (cells.get("email") or "").strip()
    if email and (len(email) > 254 or not EMAIL.match(email)):
        raise ImportProblem(line, "email", "not an e-mail address")
    entry["email"] = email or None
    return number, entry


def _visa(line, cells):
    number = visa_number(cells["visa_number"])
    if not VISA_NUMBER.match(number):
        raise ImportProblem(line, "visa_number", "not 6 to 20 letters and digits")
    entry = _names(line, cells)
    for field in ("birth_date", "validity_end"):
        entry[field] = _day(line, field, cells)
    kind = (cells["visa_kind"] or "").strip().lower().replace("-", "_")
    if kind not in VISA_KINDS:
        raise ImportProblem(line, "visa_kind", "one of " + ", ".join(VISA_KINDS))
    entry["visa_kind"] = kind
    return number, entry


def diff(current, incoming, book=None):
    """What an import changes: {added, changed, removed}, keys (foreigner or visa numbers)
    sorted; changed lists [{<the book's key>, fields}] with the names of the fields that
    differ."""
    book = book or PERMITS
    added = sorted(set(incoming) - set(current))
    removed = sorted(set(current) - set(incoming))
    changed = []
    for number in sorted(set(current) & set(incoming)):
        fields = [f for f in book.fields if current[number].get(f) != incoming[number].get(f)]
        if fields:
            changed.append({book.key: number, "fields": fields})
    return {"added": added, "changed": changed, "removed": removed}


def stored_match(number, entry):
    """The digest a renewal is looked up by: the same work whatever differs (number, birth
    date or name), and the register's lookup never compares the fields one by one."""
    return hashlib.sha256(match_key(number, entry["birth_date"],
                                    entry["family_name"]).encode()).hexdigest()


def lookup_match(foreigner_number, birth_date, family_name):
    return hashlib.sha256(match_key(foreigner_number, birth_date, family_name).encode()).hexdigest()


def stored_visa_match(number, entry):
    """A visa's digest, as stored_match's for a permit (another prefix: never one another's)."""
    return hashlib.sha256(visa_match_key(number, entry["birth_date"],
                                         entry["family_name"]).encode()).hexdigest()


def lookup_visa_match(number, birth_date, family_name):
    return hashlib.sha256(visa_match_key(number, birth_date, family_name).encode()).hexdigest()


PERMITS = Book("permits", "foreigner_number", REQUIRED, OPTIONAL, _permit, ENTRY_FIELDS,
               stored_match)
VISAS = Book("visas", "visa_number", ("visa_number", "family_name", "given_names", "birth_date",
                                      "visa_kind", "validity_end"), (), _visa, VISA_FIELDS,
             stored_visa_match)


def invitation_window(today, from_days, to_days):
    """(first, last) expiry dates (YYYY-MM-DD) invited on `today`: permits expiring between
    to_days and from_days ahead (defaults 60 and 120)."""
    near, far = sorted((to_days, from_days))
    return ((today + timedelta(days=near)).isoformat(), (today + timedelta(days=far)).isoformat())


def due_invitations(entries, today, from_days, to_days, limit):
    """[(number, entry)] to invite now: in the window, with an e-mail, soonest expiry first
    (ties by number, so that two passes agree)."""
    first, last = invitation_window(today, from_days, to_days)
    due = [(n, e) for n, e in entries if e.get("email") and first <= e["expiry"] <= last]
    return sorted(due, key=lambda pair: (pair[1]["expiry"], pair[0]))[:limit]


def permit_id(keyed_digest, number, entry):
    """One invitation per permit: the same number and expiry re-imported is the same permit;
    a renewed permit (new expiry) is another. keyed_digest: an HMAC under the register's key,
    so that the id in the e-mail's link cannot be computed from a number."""
    return "INV-" + keyed_digest(f"{number}|{entry['expiry']}").hex()[:24].upper()


def procedure_for(entry):
    return PERMIT_KINDS[entry["permit_kind"]]
