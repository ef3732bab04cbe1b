"""What a booking records of itself as it lives: its confirm-by, how soon it was booked, its
cancellation, its check-in."""


def seconds_after_publication(published_at, booked_at):
    if published_at is None:
        return None
    return round((booked_at - published_at).total_seconds(), 3)


def confirm_by_ts(created_ts, minutes):
    """Epoch seconds past which an unconfirmed booking is released; None: never (minutes <= 0)."""
    return created_ts + 60 * minutes if minutes > 0 else None


def cancellation(reason, evidence, actor, now):
    """The record of a cancellation, kept as one sub-document of the booking."""
    return {"reason": reason, "evidence": evidence, "by": actor, "at": now}


def check_in_record(agent, now):
    return {"by": agent, "at": now}
