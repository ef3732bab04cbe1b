"""Supervisors' capacity figures (staff gateway), apart from the monitoring figures in figures.py.

Per procedure and site: places scheduled (not yet released), released (in open slots), booked,
freed (ever given back) and waiting for their secret re-release (held back). Decoys never
count. For a release batch: how long its places took to go, from the instants the holds were
taken (`holds.<id>: epoch seconds` in each slot); a place given back since is no longer in
the slot's holds, so the figures describe the places still booked.
"""
from services.slots.rules import OPEN, SCHEDULED

FIGURES = ("scheduled", "released", "booked", "free", "freed", "waiting")


def capacity_figures(slots):
    """[{procedure, site, scheduled, released, booked, free, freed, waiting}] by procedure, site."""
    rows = {}
    for slot in slots:
        row = rows.setdefault((slot["procedure"], slot["site"]),
                              dict({"procedure": slot["procedure"], "site": slot["site"]},
                                   **{name: 0 for name in FIGURES}))
        if slot.get("state") == SCHEDULED:
            row["scheduled"] += slot.get("capacity", 0)
            continue
        if slot.get("state") == OPEN:
            row["released"] += slot.get("capacity", 0) - slot.get("held_back", 0)
        row["booked"] += slot.get("booked", 0)
        row["free"] += slot.get("free", 0)
        row["freed"] += slot.get("freed", 0)
        row["waiting"] += slot.get("held_back", 0)
    return [rows[key] for key in sorted(rows)]


def release_speed(batch, slots):
    """How the places of one released batch went: booked, still free, and the seconds after
    the release at which the first place, half of them and the last one were taken (None
    while not that many are booked)."""
    real = [s for s in slots if not s.get("decoy")]
    released_ts = batch.get("released_ts") or 0
    taken = sorted(max(0.0, ts - released_ts) for s in real for ts in (s.get("holds") or {}).values()
                   if ts >= released_ts)
    places = batch.get("places") or 0
    free = sum(s.get("free", 0) for s in real)

    def after(count):
        return round(taken[count - 1], 1) if 0 < count <= len(taken) else None

    return {"places": places, "booked": len(taken), "free": free,
            "first_after_seconds": after(1),
            "half_after_seconds": after((places + 1) // 2) if places else None,
            "all_gone_after_seconds": after(places) if places and free == 0 else None}
