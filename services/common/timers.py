"""A nameko timer whose interval comes from configuration.

nameko's `timer(interval=...)` fixes the interval when the class is defined; periodic jobs
(outbox relays, sweeps, releases) read theirs from the configuration instead, so that tests
and operators can tune them.
"""
from nameko.timer import Timer

from services.common.settings import setting


class ConfigTimer(Timer):
    def __init__(self, key, eager=False, **kwargs):
        self.key = key
        super().__init__(interval=setting({}, key), eager=eager, **kwargs)

    def setup(self):
        self.interval = setting(self.container.config, self.key)


def config_timer(key, eager=False):
    """@config_timer("OUTBOX_RELAY_SECONDS"): fires every config[key] seconds (its default
    from services.common.settings when unset)."""
    return ConfigTimer.decorator(key, eager=eager)
