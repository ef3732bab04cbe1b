"""Bookings an agent makes for a person without e-mail (issue 21), as plain functions.

At the reception desk or on the phone line, an agent books a free slot (open mode) for a
person with their identity and a postal address or a phone: the convocation is printed at
the desk or posted. Such a booking is born confirmed (the agent saw or heard the person; there
is no mailbox to prove), announces nothing at creation (no e-mail to send; fraud's screens
read mailboxes, speed and networks, none of which a desk booking has), and is marked with its
`channel` and the agent (`by`). M3 by identity instead of mailbox: one active booking per
person and procedure, the same check as the web's (bookings.py `_refuse_second_person`, on
`person_key` or the foreigner number); the booking stores its `person_key`, so that check finds
it for a web booking too. M4 stays at the counter (the signed convocation).
"""
from services.booking.records import seconds_after_publication
from services.common.contract import ACTIVE
from services.common.exact_names import identity_key
from services.common.tokens import TokenSigner
from services.common.timeutil import parse_iso


def person_has_booking_message(reference):
    """To staff only (the applicant's refusal names nothing): which booking the person holds."""
    return (f"Cette personne a déjà le rendez-vous {reference} pour cette démarche : un seul par "
            f"personne. / This person already holds booking {reference} for this procedure: "
            f"one per person.")


def desk_booking(reference, data, slot, now, token, salt, instance):
    """The booking document: active at once, no e-mail, its channel and agent, no outbox
    record (nothing to announce until it is cancelled or checked in)."""
    published_at = parse_iso(slot["published_at"]) if slot.get("published_at") else None
    return {
        "_id": reference,
        "status": ACTIVE,
        "channel": data["channel"],
        "by": data["agent"],
        "procedure": data["procedure"],
        "slot": {"id": slot["id"], "site": slot["site"], "start": parse_iso(slot["start"]),
                 "end": parse_iso(slot["end"]), "published_at": published_at, "decoy": False},
        "identity": {
            "family_name": data["family_name"],
            "given_names": data["given_names"],
            "birth_date": data["birth_date"].isoformat(),
            "foreigner_number": data.get("foreigner_number"),
        },
        "email": None,
        "email_key": None,
        # the person as the web's one-booking-per-person check finds them (M3 by identity)
        "person_key": identity_key(data),
        "phone": data.get("phone"),
        "postal_address": (data.get("postal_address") or "").strip() or None,
        "client": {},
        "created_at": now,
        "confirmed_ts": now.timestamp(),
        "confirm_by_ts": None,
        "seconds_after_publication": seconds_after_publication(published_at, now),
        "token_hash": TokenSigner.hash_token(token),
        "token_salt": salt,
        "hold_id": reference,
        "created_by": instance,
        "outbox": {},
    }
