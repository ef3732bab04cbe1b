"""The current time as a dependency, so that tests can stand at a chosen instant.

Rules that depend on the day or the hour (walk-in mornings, release instants, offers'
deadlines) take `now` as an argument; entrypoints get it from `self.clock.now()`. A test
replaces the dependency (nameko.testing.services.replace_dependencies) and sets what
`now()` returns.
"""
from nameko.extensions import DependencyProvider

from services.common.timeutil import utcnow


class SystemClock:
    def now(self):
        """An aware datetime in UTC."""
        return utcnow()


class Clock(DependencyProvider):
    def setup(self):
        self.clock = SystemClock()

    def get_dependency(self, worker_ctx):
        return self.clock
