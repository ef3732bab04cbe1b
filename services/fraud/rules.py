"""Fraud rules as plain functions: M3 (one e-mail, several bookings), decoys, and the network
score that sends to staff review (never to cancellation)."""

CANCEL, REVIEW = "cancel", "review"
# a booking's state in fraud's index (services/fraud/store.py)
ACTIVE, CANCELLED = "active", "cancelled"
# what to do when one e-mail holds several active bookings
CANCEL_ALL, KEEP_EARLIEST = "cancel_all", "keep_earliest"


def email_decisions(bookings, same_person=KEEP_EARLIEST, different_people=CANCEL_ALL):
    """M3. bookings: the active bookings on one e-mail (dicts with reference, identity_key,
    created_ts). Returns [(reference, action, evidence)] with action cancel or review.

    Several identities on one address is the resale pattern: by default all are cancelled.
    One person booking twice keeps the earliest booking.
    """
    if len(bookings) < 2:
        return []
    ordered = sorted(bookings, key=lambda b: (b["created_ts"], b["reference"]))
    identities = {b["identity_key"] for b in ordered}
    policy = different_people if len(identities) > 1 else same_person
    evidence = {"bookings": [b["reference"] for b in ordered], "identities": len(identities)}
    if policy == KEEP_EARLIEST:
        return [(b["reference"], CANCEL, dict(evidence, kept=ordered[0]["reference"]))
                for b in ordered[1:]]
    action = CANCEL if policy == CANCEL_ALL else REVIEW
    return [(b["reference"], action, evidence) for b in ordered]


def person_decisions(bookings, matched_by=()):
    """M3 by identity. bookings: the active bookings of one person (folded names and birth
    date, or foreigner number) for one procedure, under different e-mails (dicts with
    reference, created_ts); matched_by: how they were found to be one person. The earliest
    is kept, the later ones are cancelled: two made at the same instant slipped past the
    booking service's up-front check together."""
    if len(bookings) < 2:
        return []
    ordered = sorted(bookings, key=lambda b: (b["created_ts"], b["reference"]))
    evidence = {"bookings": [b["reference"] for b in ordered], "kept": ordered[0]["reference"],
                "matched_by": list(matched_by),
                "summary": ["The same person (names and birth date, or foreigner number) "
                            "held several bookings for one procedure; the earliest is kept."]}
    return [(b["reference"], CANCEL, evidence) for b in ordered[1:]]


def grabbing_score(seconds_after_publication, identities_same_client, identities_same_agent,
                   bookings_same_client_after_release, cfg):
    """A score in [0, ~1.4] and the signals behind it.

    No single honest behaviour reaches the review threshold alone: booking quickly after a
    release is what everyone does; a family or an association booking for two or three people
    from one address looks like a small cluster. A script taking many identities' slots from one
    address within seconds of publication adds everything up.

    A user agent is shared by everyone on the same browser version: in a release, the common
    ones book hundreds of identities. It only adds to a cluster an address already shows;
    alone, with the quick booking everyone makes, it sent most honest applicants of the
    fraud benchmark to staff review.
    """
    score, signals = 0.0, {}
    if seconds_after_publication is not None:
        if seconds_after_publication < cfg["fast_seconds"]:
            score += 0.35
            signals["booked_within_seconds"] = seconds_after_publication
        elif seconds_after_publication < cfg["quick_seconds"]:
            score += 0.15
            signals["booked_within_seconds"] = seconds_after_publication
    if identities_same_client >= 2:
        score += min(0.6, 0.2 * (identities_same_client - 1))
        signals["identities_same_address"] = identities_same_client
    if identities_same_client >= 2 and identities_same_agent >= cfg["agent_identities"]:
        score += 0.2
        signals["identities_same_user_agent"] = identities_same_agent
    if bookings_same_client_after_release >= 3:
        score += 0.2
        signals["bookings_same_address_after_release"] = bookings_same_client_after_release
    return round(score, 3), signals


def grabbing_action(score, cfg):
    """Network evidence (address, user agent, speed) sends to review, never to cancellation:
    a carrier's shared address or an association's office produce the same signals as a
    cybercafé script (DESIGN.md section 8). Only booking-tied evidence cancels."""
    if score >= cfg["review_score"]:
        return REVIEW
    return None


def strong(score, cfg):
    """A review case staff should look at first (FRAUD_CANCEL_SCORE, the old cancel mark)."""
    return score >= cfg["cancel_score"]


def address_case_id(client_ip, created_ts, window):
    """One review case per address and window bucket: a cluster's bookings are decided together."""
    return f"address:{client_ip}:{int(created_ts // window)}"


def describe_signals(signals, cfg):
    """The network evidence in plain words, for staff at a desk."""
    words = []
    if "identities_same_address" in signals:
        words.append(f"{signals['identities_same_address']} different people booked from one "
                     f"network address within {cfg['window'] / 60:.0f} minutes. A phone "
                     f"carrier, an association or a library look the same: the address "
                     f"alone is no proof.")
    if "bookings_same_address_after_release" in signals:
        words.append(f"{signals['bookings_same_address_after_release']} bookings from that "
                     f"address came within {cfg['release_window']:.0f} s of a release.")
    if "booked_within_seconds" in signals:
        words.append(f"Booked {signals['booked_within_seconds']:.1f} s after the place was published.")
    if "identities_same_user_agent" in signals:
        words.append(f"{signals['identities_same_user_agent']} people booked with the same "
                     f"browser signature.")
    return words


def decoy_linked(entry, decoy_booking):
    """How a booking relates to one that booked a decoy: 'email', 'identity+address',
    'identity' or 'address' (or None). Each goes to review with the decoy booking (a decoy
    cancels nobody, see screening.check_decoy): the link tells staff how close it is.
    """
    same_ip = bool(entry.get("client_ip")) and entry.get("client_ip") == decoy_booking.get("client_ip")
    if entry["email_key"] == decoy_booking["email_key"]:
        return "email"
    if entry["identity_key"] == decoy_booking["identity_key"]:
        return "identity+address" if same_ip else "identity"
    return "address" if same_ip else None


def supersedes(change, current):
    """Whether a status `change` replaces the `current` one in fraud's index, so that the index
    ends in the booking's latest state whatever order its events are handled in, and however
    many times each is. Each is (status, ts): ts the time of the event that set it (its
    occurred_at, or when fraud itself cancelled), or None for what a confirmation writes
    (active, and nothing about what came after). current None: nothing indexed yet.

    The events come on separate queues: a booking's cancellation may be handled before its
    confirmation. A booking is confirmed before anything can cancel it, so a confirmation
    never replaces a status an event set (else it would bring the cancelled booking back);
    between cancellations and restorations the later wins, and at the same instant the
    cancellation, so that neither order nor redelivery changes the outcome.
    """
    if current is None:
        return True
    (status, ts), (current_status, current_ts) = change, current
    if ts is None:
        return current_ts is None and current_status == status
    if current_ts is None or ts != current_ts:
        return current_ts is None or ts > current_ts
    return status == CANCELLED or current_status == status
