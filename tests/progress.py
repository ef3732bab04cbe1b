"""A pytest plugin of `make test`'s shards (tests/parallel.py loads it with `-p tests.progress`).

TEST_PROGRESS_OUT: the shard's collected tests, then each test as it starts and ends, written
at once. When a test hangs, pytest-timeout ends the whole process (its thread method, the one
eventlet leaves it): this file then says which test hung and which never ran.
"""
import os

_rootpath = None


def pytest_configure(config):
    global _rootpath
    _rootpath = config.rootpath


def _absolute(nodeid):
    """The node id with its file's absolute path: the second run starts from the project's
    folder, whatever the rootdir of a test file outside it."""
    path, sep, rest = nodeid.partition("::")
    return f"{_rootpath / path}{sep}{rest}" if _rootpath else nodeid


def _progress(line):
    out = os.environ.get("TEST_PROGRESS_OUT")
    if out:
        with open(out, "a") as progress:
            progress.write(line + "\n")


def pytest_collection_finish(session):
    for item in session.items:
        _progress(f"collected {_absolute(item.nodeid)}")


def pytest_runtest_logstart(nodeid, location):
    _progress(f"start {_absolute(nodeid)}")


def pytest_runtest_logfinish(nodeid, location):
    _progress(f"end {_absolute(nodeid)}")
