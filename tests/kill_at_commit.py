"""The real aggregator (``fx aggregator start``), killed with SIGKILL at one logged point: the
round ROUND has closed, every site has been acknowledged and has fetched the next round's
model from memory, and the close's files are not committed yet.

    python tests/kill_at_commit.py WORKSPACE ROUND EXPECTED.safetensors

Before it kills itself it writes the model the close computed to EXPECTED (outside the
workspace's state), so a test can compare it with the model a restarted aggregator gets by
replaying the round's journal.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from accord.aggregator.committer import Committer
from accord.aggregator.runtime import AggregatorRuntime
from accord.cli.main import main
from accord.tensors.state import save_state


def install(closing: int, expected: str) -> None:
    fetched: set[str] = set()
    everyone = threading.Event()
    get_model, write = AggregatorRuntime.get_model, Committer.write

    def counting_get_model(self, collaborator, plan_hash, round_number):
        model = get_model(self, collaborator, plan_hash, round_number)
        if round_number == closing + 1:
            fetched.add(collaborator)
            if fetched >= set(self.engine.collaborators):
                everyone.set()
        return model

    def killed_write(self, commit):
        if commit.round_number == closing + 1 and threading.current_thread().name == "accord-commit":
            save_state(expected, commit.model)
            everyone.wait()  # only a site that was acknowledged fetches the next round's model
            print(f"kill_at_commit: every site has round {closing + 1}'s model; SIGKILL before its commit", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        write(self, commit)

    AggregatorRuntime.get_model = counting_get_model
    Committer.write = killed_write


if __name__ == "__main__":
    workspace, round_number, expected_file = sys.argv[1:4]
    install(int(round_number), expected_file)
    sys.exit(main(["aggregator", "start", "-w", workspace]))
