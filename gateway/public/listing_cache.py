"""A very short memory of slot listings at the gateway.

After a release, every waiting applicant (and every bot) polls the same listing several times
a second; each poll cost a round trip to the slots service and a sorted query. Answers younger
than SLOT_LISTING_CACHE_SECONDS are served again from here: a listing holds no personal data,
is the same for everyone, and only decides what is shown, never what is booked (the slots
database decides each booking), so the worst it does is show a change that much later. It
reveals nothing about the schedule: a release appears at most that much after it happened.
"""
import time

from nameko.extensions import DependencyProvider

from services.common.settings import setting

MAX_ENTRIES = 5_000


class ListingMemory:
    def __init__(self, seconds, clock=time.monotonic):
        self.seconds, self.clock = seconds, clock
        self._entries = {}

    def get(self, key):
        if self.seconds <= 0:
            return None
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self.clock():
            return None
        return entry[1]

    def put(self, key, answer):
        if self.seconds <= 0:
            return
        now = self.clock()
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
        self._entries[key] = (now + self.seconds, answer)


class SlotListings(DependencyProvider):
    """One memory per gateway process; SLOT_LISTING_CACHE_SECONDS (default 1, 0 disables)."""

    def setup(self):
        self.memory = ListingMemory(setting(self.container.config, "SLOT_LISTING_CACHE_SECONDS", 1.0))

    def get_dependency(self, worker_ctx):
        return self.memory
