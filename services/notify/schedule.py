"""When notify's delivery timer next needs to look at the outbox.

Each look is a scan of the outbox (slow on the embedded stand-in), so the timer looks only
when work can be there: a retry this process scheduled comes due, the mail server is back, the
last pass found work, or every `sweep` seconds for other processes' leftovers.
"""


class ScanSchedule:
    def __init__(self, sweep_seconds):
        self.sweep_seconds = sweep_seconds
        self.next_scan_ts = 0.0  # look at once after start

    def scan_by(self, ts):
        """Make sure the outbox is looked at no later than `ts`."""
        self.next_scan_ts = min(self.next_scan_ts, ts)

    def begin_pass(self, now_ts):
        """True when a look is due now; the next one is then set a sweep later."""
        if now_ts < self.next_scan_ts:
            return False
        self.next_scan_ts = now_ts + self.sweep_seconds
        return True
