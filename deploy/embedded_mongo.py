"""Start the embedded MongoDB wire-protocol stand-in (nx-27017) for local runs and tests.

Only used when no MONGO_URI is given: the services talk plain pymongo either way, so a real
MongoDB is a configuration change, not a code change.
"""
import argparse
import os
import subprocess
import time
from pathlib import Path

import pymongo


def wait_until_up(uri, timeout=90.0):  # several start at once on a loaded machine
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
            client.admin.command("ping")
            client.close()
            return
        except pymongo.errors.PyMongoError as exc:  # not listening yet
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"MongoDB stand-in did not answer at {uri}: {last}")


ROOT = Path(__file__).resolve().parent.parent
# the stand-in lives in a virtualenv of its own (the Makefile makes it): it needs a newer
# PyMongo than the one the services pin for Eventlet
STAND_IN_VENV = Path(os.environ.get("MONGO_STAND_IN_VENV", ROOT / ".venv-mongo"))


def executable():
    exe = STAND_IN_VENV / "bin" / "nx-27017"
    if not exe.exists():
        raise RuntimeError(f"the MongoDB stand-in is not installed at {exe}: run `make install`")
    return exe


def start(data_dir, port, host="127.0.0.1", niceness=0, preexec_fn=None):
    """Start nx-27017 with one SQLite file per database under data_dir; return the process.

    By default in a session of its own (a terminal's Ctrl-C does not stop it before the
    services that write to it); `preexec_fn`, if given, runs in the child instead and decides
    its process group (deploy/run.py puts it in the group of the whole system)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = executable()
    cmd = [
        "nice", "-n", str(niceness),
        str(exe), "--data-dir", str(data_dir), "--host", host, "-p", str(port),
        # its defaults are shared /tmp paths: keep each instance's own files apart
        "--log-file", str(data_dir / "nx-27017.log"),
        "--pid-file", str(data_dir / "nx-27017.pid"),
    ]
    log = open(data_dir / "stdout.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=preexec_fn is None,
                            preexec_fn=preexec_fn)
    uri = f"mongodb://{host}:{port}"
    try:
        wait_until_up(uri)
    except RuntimeError:
        proc.kill()
        raise
    return proc, uri


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("MONGO_DATA_DIR", "var/mongo"))
    parser.add_argument("--port", type=int, default=27017)
    args = parser.parse_args()
    proc, uri = start(args.data_dir, args.port)
    print(f"MongoDB stand-in at {uri}, data in {args.data_dir}", flush=True)
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()


if __name__ == "__main__":
    main()
