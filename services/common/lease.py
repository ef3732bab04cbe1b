"""Leases: a periodic job runs in one instance of a service at a time.

A nameko `timer` fires in every running instance. A job that must run once (a release, a
sweep) first takes its lease: one atomic write in the service's own database, with an expiry,
so that an instance that dies holding it only delays the job by the lease's length.
"""
import os
import socket
import uuid

from nameko.extensions import DependencyProvider
from pymongo.errors import DuplicateKeyError

from services.common.mongo import one_if_any


def owner_id():
    """A name for this process: host, pid and a random part (pids repeat across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    def __init__(self, collection):
        self.leases = collection

    def acquire(self, job, owner, seconds, now_ts):
        """True when `owner` holds the lease on `job` until now_ts + seconds.

        Taken if free, expired, or already ours (renewed); refused while another owner's runs.
        """
        until = now_ts + seconds
        taken = self.leases.find_one_and_update(
            one_if_any(job, {"until_ts": {"$lt": now_ts}}, {"owner": owner}),
            {"$set": {"owner": owner, "until_ts": until}, "$inc": {"runs": 1}})
        if taken is not None:
            return True
        try:
            self.leases.insert_one({"_id": job, "owner": owner, "until_ts": until, "runs": 1})
            return True
        except DuplicateKeyError:
            return False  # another owner holds it and its lease runs

    def release(self, job, owner):
        """Give the lease up early (a clean stop), so another instance need not wait it out."""
        self.leases.update_one({"_id": job, "owner": owner}, {"$set": {"until_ts": 0}})

    def state(self, job):
        """{owner, until_ts, runs}: who holds the job and how many times it was taken."""
        return self.leases.find_one({"_id": job}) or {}


class InstanceId(DependencyProvider):
    """A name for this running instance of a service (one per container), to own leases."""

    def setup(self):
        self.value = owner_id()

    def get_dependency(self, worker_ctx):
        return self.value
