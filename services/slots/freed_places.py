"""Freed places held back: a place given back is not bookable at once, but at a random later
instant, so that whoever let it go (an applicant, a trafficker cancelling for a buyer, the
sweeper, staff) cannot take it back before an applicant sees it.

How it goes (plain functions; the slots service calls them, store.py stores):
- `slots.release(hold_id)` moves the place from `booked` to `held_back` and sets the slot's
  `rerelease_ts` to `given_back_at()`: FREED_PLACE_MIN_SECONDS–FREED_PLACE_MAX_SECONDS later,
  or a random moment in what is left before a slot that starts sooner (`freed_place_delay`).
  A later instant only ever pushes the slot's return back (`$max`), so a place freed now
  never rides on an earlier place's nearer return.
- Places added to an open slot (M2, services/slots/extra_capacity.py) wait in `held_back`
  the same way, until an instant drawn like a release batch's.
- The release timer (`release_due`) brings back every slot whose `rerelease_ts` has come
  (`bring_back_due`): its held-back places become `free` at once, with a new `published_ts`
  (fraud measures speed from it) and a `slots_released` event through the outbox.

A slot always holds capacity == booked + free + held_back.
"""
from services.slots.release import to_ts


def freed_place_delay(now, slot_start, policy, rng):
    """Seconds before a place given back (or added to an open slot) is bookable again.

    Random in [freed_min, freed_max]; when the slot starts sooner than that, a random moment
    in what is left (never at once: at least half of it, so the one who let it go cannot
    catch it back within the same breath).
    """
    left = (to_ts(slot_start) - to_ts(now))
    if left >= policy.freed_max:
        return rng.uniform(policy.freed_min, policy.freed_max)
    if left >= policy.freed_min:
        return rng.uniform(policy.freed_min, left)
    return rng.uniform(left / 2, left) if left > 0 else 0.0


def given_back_at(now, slot_start, policy, rng):
    """Epoch seconds at which a place given back now on a slot starting at `slot_start` is
    bookable again (`now` when the slot is unknown or has started: nothing left to wait for)."""
    if slot_start is None:
        return to_ts(now)
    return to_ts(now) + freed_place_delay(now, slot_start, policy, rng)


def bring_back_due(store, now_ts, release_mark, outbox_entry):
    """One pass of the timer: yields each slot whose held-back places came back now (for its
    caller to announce at once), each claimed by a conditional update (another instance's
    pass brings back none twice).

    release_mark(release_id, places): what the slot carries of this return (the bound on
    unconfirmed bookings); outbox_entry(): the `slots_released` record to dispatch."""
    for slot in store.due_rereleases(now_ts):
        # the id the return's event carries (SlotsService._rerelease_event)
        mark = release_mark(f"{slot['_id']}@{now_ts:.0f}", slot["held_back"])
        back = store.rerelease(slot, now_ts, outbox_entry(), mark)
        if back is not None:
            yield back
