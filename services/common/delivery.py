"""At-least-once delivery, one vocabulary for every service.

The outbox (events a service announces, services/common/outbox.py), the inbox (events a
service receives, services/common/inbox.py) and notify's mail queue all name the states of
their records the same way, so that monitoring counts them alike.
"""
PENDING = "pending"          # written, not yet sent or handled
IN_PROGRESS = "in_progress"  # claimed by one worker, under a lease that runs out if it dies
RETRYING = "retrying"        # failed, waits out its backoff before the next try
DONE = "done"                # sent, or handled
PARKED = "parked"            # out of attempts: kept for staff, who replay or resend it

STATES = (PENDING, IN_PROGRESS, RETRYING, DONE, PARKED)


def backoff(attempts, base, cap):
    """Seconds to wait after the `attempts`-th failed try: base, 2 base, 4 base... up to cap."""
    return min(cap, base * (2 ** max(0, attempts - 1)))


def count_states(collection, field="state"):
    """{state: count} for every state, zero included (one aggregation)."""
    counts = {state: 0 for state in STATES}
    for row in collection.aggregate([{"$group": {"_id": f"${field}", "n": {"$sum": 1}}}]):
        if row["_id"] in counts:
            counts[row["_id"]] = row["n"]
    return counts


def count_states_by(collection, by, field="state"):
    """[{by: value, "state": state, "count": n}] for each (value, state) present (one
    aggregation): inbox events by type and state, for monitoring."""
    rows = collection.aggregate([{"$group": {"_id": {"by": f"${by}", "state": f"${field}"},
                                             "n": {"$sum": 1}}}])
    return sorted(({by: row["_id"].get("by"), "state": row["_id"].get("state"), "count": row["n"]}
                   for row in rows if row["_id"].get("state") in STATES),
                  key=lambda r: (str(r[by]), r["state"]))
