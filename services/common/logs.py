"""Logging filters referenced from deploy/config.yaml."""
import logging


class DropExpectedErrors(logging.Filter):
    """Drop nameko's per-worker record of an *expected* error (slot full, not found...).

    Those are answers, not faults: in a release burst thousands of "slot full" replies would
    each write a traceback in every process they cross. Unexpected errors are still logged.
    """

    def filter(self, record):
        return not (record.name == "nameko.containers"
                    and str(record.msg).startswith("(expected) error handling worker"))
