"""Slots' domain figures: places released, booked and free, and how fast releases went.

Plain functions over slot documents (decoys left out: they are no one's places). "How fast a
release was taken" is measured per slot, from its `published_at` to the hold that took its
last place (the `holds` map keeps when each live place was taken). When the random releases
(a releases collection) land, the same figure per release batch belongs here.
"""
from datetime import datetime, timezone

from services.common.figures import median, rounded, week_of

FIELDS = {"procedure": 1, "capacity": 1, "booked": 1, "free": 1, "start": 1, "published_at": 1,
          "published_ts": 1, "holds": 1, "decoy": 1, "state": 1}


def published(slot):
    """When the slot was released (the release timer writes epoch seconds), or None."""
    if slot.get("published_ts") is not None:
        return datetime.fromtimestamp(slot["published_ts"], timezone.utc)
    return slot.get("published_at")


def seconds_to_full(slot):
    """Seconds from publication to the last place taken, or None while a place is free."""
    if slot.get("free", 1) > 0 or not slot.get("holds") or published(slot) is None:
        return None
    return max(0.0, max(slot["holds"].values()) - published(slot).timestamp())


def figures(slots, procedures, now):
    """{procedure: {released, booked, free, next_free, median_seconds_to_full, full_slots,
    weeks: [{week, released, booked, median_seconds_to_full}]}}."""
    out = {code: {"released": 0, "booked": 0, "free": 0, "next_free": None, "to_full": [],
                  "weeks": {}} for code in procedures}
    for slot in slots:
        if slot.get("decoy") or slot.get("procedure") not in out:
            continue
        entry = out[slot["procedure"]]
        entry["released"] += slot.get("capacity", 0)
        entry["booked"] += slot.get("booked", 0)
        if slot["start"] > now and slot.get("state") == "open" and slot.get("free", 0) > 0:
            entry["free"] += slot["free"]
            if entry["next_free"] is None or slot["start"] < entry["next_free"]:
                entry["next_free"] = slot["start"]
        week = entry["weeks"].setdefault(week_of(published(slot)),
                                         {"released": 0, "booked": 0, "to_full": []})
        week["released"] += slot.get("capacity", 0)
        week["booked"] += slot.get("booked", 0)
        to_full = seconds_to_full(slot)
        if to_full is not None:
            entry["to_full"].append(to_full)
            week["to_full"].append(to_full)
    return {code: {
        "released": e["released"], "booked": e["booked"], "free": e["free"],
        "next_free": e["next_free"].isoformat() if e["next_free"] else None,
        "days_to_next_free": rounded((e["next_free"] - now).total_seconds() / 86400)
        if e["next_free"] else None,
        "full_slots": len(e["to_full"]),
        "median_seconds_to_full": rounded(median(e["to_full"])),
        "weeks": [{"week": w, "released": v["released"], "booked": v["booked"],
                   "median_seconds_to_full": rounded(median(v["to_full"]))}
                  for w, v in sorted(e["weeks"].items())],
    } for code, e in out.items()}
