"""A nameko timer whose interval comes from configuration.

nameko's `timer(interval=...)` fixes the interval when the class is defined; periodic jobs
(outbox relays, sweeps, releases) read theirs from the configuration instead, so that tests
and operators can tune them.
"""
from nameko.timer import Timer

from services.common.settings import setting


class ConfigTimer(Timer):
    def __init__(self, key, default, eager=False, **kwargs):
        self.key, self.default = key, default
        super().__init__(interval=default, eager=eager, **kwargs)

    def setup(self):
        self.interval = setting(self.container.config, self.key, self.default)


def config_timer(key, default, eager=False):
    """@config_timer("OUTBOX_RELAY_SECONDS", 5.0): fires every config[key] seconds."""
    return ConfigTimer.decorator(key, default, eager=eager)
