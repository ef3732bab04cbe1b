"""iCalendar text (RFC 5545) for appointment files: notify attaches one, the public pages serve one."""
import re
from datetime import timezone

# every character str.splitlines() breaks a line at (CR, LF, VT, FF, FS, GS, RS, NEL, U+2028,
# U+2029): each becomes the escaped "\n", so a name can never start a property of its own
ICS_LINE_BREAK = re.compile("\r\n|[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# other controls are not allowed in TEXT values (RFC 5545 section 3.3.11): dropped
ICS_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f]")


def ics_text(value):
    """Escape a value for an iCalendar TEXT property (RFC 5545 section 3.3.11)."""
    text = (str(value).replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,"))
    return ICS_CONTROL.sub("", ICS_LINE_BREAK.sub("\\\\n", text))


def fold_ics(text):
    """CRLF line ends, lines folded at 75 octets without splitting a UTF-8 character.

    Split at the template's own line ends only: values are escaped, and splitlines() would
    also break at U+2028 and friends."""
    out = []
    for line in text.strip().replace("\r\n", "\n").split("\n"):
        chunk, size = "", 0
        for char in line:
            width = len(char.encode())
            if size + width > 75:
                out.append(chunk)
                chunk, size = " ", 1
            chunk += char
            size += width
        out.append(chunk)
    return "\r\n".join(out) + "\r\n"


def ics_time(value):
    """An aware datetime as an iCalendar UTC DATE-TIME."""
    return value.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def appointment_ics(uid, stamp, start, end, summary, location, description):
    """One VEVENT in its VCALENDAR, folded and escaped; times are aware datetimes."""
    lines = [
        "BEGIN:VCALENDAR", "VERSION:2.0",
        "PRODID:-//Prefecture de l'Herault//Rendez-vous etrangers//FR",
        "CALSCALE:GREGORIAN", "METHOD:PUBLISH", "BEGIN:VEVENT",
        f"UID:{ics_text(uid)}", f"DTSTAMP:{ics_time(stamp)}",
        f"DTSTART:{ics_time(start)}", f"DTEND:{ics_time(end)}",
        f"SUMMARY:{ics_text(summary)}", f"LOCATION:{ics_text(location)}",
        f"DESCRIPTION:{ics_text(description)}",
        "END:VEVENT", "END:VCALENDAR",
    ]
    return fold_ics("\n".join(lines))
