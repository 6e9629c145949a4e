"""Run one publish in a child process, for tests that kill or starve it (not a test module).

``python publish_child.py ZOO FINGERPRINTS_JSON [KILL_DELAY]``: publishes the staged
fingerprints to ZOO and prints the version. With KILL_DELAY (seconds), the process sends
itself SIGKILL that long after the Icechunk commit starts, and never gets past the commit:
the kill lands inside the commit, or just after it when the commit was faster.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import icechunk

from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version


def kill_during_commit(delay: float) -> None:
    """Make every Icechunk commit of this process end in SIGKILL ``delay`` seconds after it starts."""
    commit = icechunk.Session.commit

    def killed_commit(self, *args, **kwargs):
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
        commit(self, *args, **kwargs)
        print("commit finished before the kill", flush=True)
        time.sleep(600)

    icechunk.Session.commit = killed_commit


def main(argv: list[str]) -> None:
    """Parse the arguments and publish."""
    zoo, fingerprints = argv[0], json.loads(argv[1])
    if len(argv) > 2:
        kill_during_commit(float(argv[2]))
    request = PublishRequest(tuple(fingerprints), specs=({"name": "tiny"},))
    print(publish_version(ZooHandle.at(zoo), request).version, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
