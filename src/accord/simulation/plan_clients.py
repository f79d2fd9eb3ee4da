"""The client_fn of a workspace: each client is the plan's task runner on the plan's data
loader for its data path (its plan/data.yaml entry if any, else its name: for Accord's
built-in sets, the shard number)."""

from __future__ import annotations

import threading
from typing import Any

from accord.collaborator.data_config import read_data_config
from accord.plan.loader import Plan
from accord.runners.base import TaskRunner
from accord.runners.from_plan import build_data_loader, build_runner
from accord.simulation.clients import Site


class PlanClients:
    """``client_fn`` of a plan: a new DataLoader per client; the TaskRunner (the model) is
    built once per worker thread and reused, its weights (and, for CONTINUE_GLOBAL, optimizer
    state) loaded from each round's global model, its optimizer reset for RESET. A plan with
    ``opt_treatment: CONTINUE_LOCAL`` keeps no client's optimizer between rounds here."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        path = plan.resolve_path(plan.model.collaborator.settings.data_config_path)
        self.data_paths: dict[str, Any] = read_data_config(path) if path.is_file() else {}
        self._local = threading.local()

    def __call__(self, cid: str) -> Site:
        return Site(self.runner(), build_data_loader(self.plan, str(self.data_paths.get(cid, cid))))

    def runner(self) -> TaskRunner:
        """This worker thread's task runner."""
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = self._local.runner = build_runner(self.plan)
        return runner

    def __getstate__(self) -> dict[str, Any]:
        return {"plan": self.plan, "data_paths": self.data_paths}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
