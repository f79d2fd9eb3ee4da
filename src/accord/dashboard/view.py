"""What the dashboard shows, gathered from what the aggregator saves: the round's status
(aggregator/status.py), the metric curves (logs/metrics.jsonl), the last events
(logs/events.jsonl) and the model files of the save folder. Read only: nothing here writes."""

from __future__ import annotations

import threading
import time
from typing import Any

from accord.aggregator.event_log import events_path, read_events
from accord.aggregator.status import read_status
from accord.dashboard.curves import MetricCurves
from accord.errors import AccordError
from accord.plan.loader import Plan

#: the events sent to the page, the newest
EVENTS_SHOWN = 50
#: the sites of each list (reported, owing, left out, bounded) sent at most, the first by name; the rest counted
SITES_SHOWN = 20
#: the model files listed at most (the save folder's regular files of MODEL_SUFFIXES, by name)
MODELS_SHOWN = 32
#: what a model file's name ends with (safetensors; ONNX, OpenVINO IR, TorchScript, Keras exports)
MODEL_SUFFIXES = (".safetensors", ".onnx", ".xml", ".bin", ".pt", ".keras")


class DashboardView:
    """The dashboard's state of one workspace's federation, as JSON values (``snapshot``)."""

    def __init__(self, plan: Plan) -> None:
        settings = plan.model.aggregator.settings
        self.plan = plan
        metrics = plan.resolve_path(settings.metrics_path)
        self._curves = MetricCurves(metrics)
        self._events = events_path(metrics)
        self._save_dir = plan.resolve_path(settings.last_state_path).parent
        self._lock = threading.Lock()  # the HTTP server's threads share the curves

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, now."""
        with self._lock:
            self._curves.refresh()
            curves = self._curves.as_json()
        events = read_events(self._events, EVENTS_SHOWN)
        now = time.time()
        return {
            "now": now,
            "plan_hash": self.plan.hash,
            "best_metric": self.plan.model.aggregator.settings.best_metric,
            "federation": self._federation(events, now),
            "curves": curves,
            "events": events,
            "models": self._models(),
        }

    def _federation(self, events: list[dict[str, Any]], now: float) -> dict[str, Any]:
        """The saved status, or ``waiting`` with why there is none yet. ``late``: the open round
        is past its straggler cut-off (cutoff_time) or its deadline, with sites still owing.
        Each list of sites holds the first SITES_SHOWN by name, ``NAME_more`` counts the rest:
        a poll sends O(1) in the number of sites."""
        try:
            state = read_status(self.plan)
        except AccordError as exc:
            return {"waiting": str(exc)}
        status, policy = state["status"], state["status"]["policy"]
        final = state["round"] >= status["rounds_to_train"]
        open_seconds = max(now - float(status["opened_at"]), 0.0)
        past_cutoff = policy["policy"] == "cutoff_time" and open_seconds >= float(policy["cutoff_seconds"])
        late = bool(status["outstanding"]) and (past_cutoff or open_seconds >= float(policy["round_deadline_seconds"]))
        return {
            "round": state["round"],
            "rounds_to_train": status["rounds_to_train"],
            "total_rounds": status["total_rounds"],
            "final_validation": final,
            "phase": _phase(events, state["round"], final),
            "finished": state["finished"],
            "running": state["running"],
            "matches_plan": state["matches_plan"],
            "pid": state["pid"],
            "best_score": state.get("best_score"),
            "updated_at": state["updated_at"],
            "open_seconds": open_seconds,
            "late": late,
            "policy": policy,
            "assigned": status["assigned"],
            **_shown("reported", status["reported"]),
            **_shown("outstanding", status["outstanding"]),
            **_shown("previous_stragglers", status["previous_stragglers"]),
            **_shown("previous_bounds", status.get("previous_bounds", [])),
        }

    def _models(self) -> list[dict[str, Any]]:
        """The save folder's model files (regular files, not links): name, bytes, modified."""
        try:
            entries = sorted(self._save_dir.iterdir())
        except OSError:
            return []
        models = []
        for path in entries:
            try:
                if not path.name.endswith(MODEL_SUFFIXES) or path.is_symlink() or not path.is_file():
                    continue
                stat = path.stat()
            except OSError:
                continue  # removed or renamed while listed
            models.append({"name": path.name, "bytes": stat.st_size, "modified": stat.st_mtime})
            if len(models) >= MODELS_SHOWN:
                break
        return models


def _shown(key: str, sites: list[str] | dict[str, list[str]]) -> dict[str, Any]:
    """``key``: the first SITES_SHOWN of ``sites`` by name (a mapping keeps their values), and
    ``key_more``: how many are left out."""
    first = sorted(sites)[:SITES_SHOWN]
    shown: list[str] | dict[str, list[str]] = {name: sites[name] for name in first} if isinstance(sites, dict) else first
    return {key: shown, f"{key}_more": max(len(sites) - SITES_SHOWN, 0)}


def _phase(events: list[dict[str, Any]], round_number: int, final: bool) -> str:
    """The open phase of round ``round_number``: that round's last phase_opened event (a
    multi-phase round), else its single phase's name."""
    for event in reversed(events):
        if event.get("round") == round_number and event["kind"] == "phase_opened":
            return str(event.get("phase", ""))
    return "validation" if final else "train"
