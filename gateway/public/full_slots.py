"""A short memory of slots the booking service just said were full.

In the seconds after a release most attempts are for slots that filled a moment ago; answering
those 409 at the gateway keeps the bus and the database for attempts that can still succeed.
Only "full" is remembered, only briefly, and only to refuse: every booking that goes through
is still decided by the slots database, so this can delay seeing a freed place by at most
the memory's length, never overbook.
"""
import time

from nameko.extensions import DependencyProvider

from services.common.settings import setting

MAX_ENTRIES = 50_000


class FullSlotMemory:
    def __init__(self, seconds, clock=time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self._until = {}

    def remember(self, slot_id):
        if self.seconds <= 0:
            return
        now = self.clock()
        if len(self._until) >= MAX_ENTRIES:
            self._until = {k: t for k, t in self._until.items() if t > now}
        self._until[slot_id] = now + self.seconds

    def recently_full(self, slot_id):
        until = self._until.get(slot_id)
        if until is None:
            return False
        if until <= self.clock():
            self._until.pop(slot_id, None)
            return False
        return True


class FullSlots(DependencyProvider):
    """One memory per gateway process; FULL_SLOT_MEMORY_SECONDS (default 1, 0 disables)."""

    def setup(self):
        self.memory = FullSlotMemory(setting(self.container.config, "FULL_SLOT_MEMORY_SECONDS", 1.0))

    def get_dependency(self, worker_ctx):
        return self.memory
