"""``fx aggregator status``: the round, who reported and who is late, read from the saved state.

The status a round's snapshot holds is built when the round opens (RoundStatus); the records
of its journal are applied to it when the status is read (``status_after``), so taking a
result costs the aggregator no status work at all, whatever the number of sites, and the
status shown is always the saved one (aggregator/saved.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from accord.aggregator import saved as disk
from accord.aggregator.lock import holder_pid
from accord.errors import AccordError
from accord.plan.loader import Plan

if TYPE_CHECKING:
    from accord.aggregator.engine import RoundEngine


class RoundStatus:
    """What ``fx aggregator status`` shows of a round as it opens (or resumes), saved in its
    snapshot: built in O(collaborators), once a round."""

    def __init__(self, engine: RoundEngine, opened_at: float, stragglers: Iterable[str], bounded: Iterable[str]) -> None:
        current = engine.current
        self.data: dict[str, Any] = {
            "rounds_to_train": engine.rounds_to_train,
            "total_rounds": engine.total_rounds,
            "round": engine.round_number,
            "opened_at": opened_at,
            "assigned": list(current.assigned) if current else [],
            "reported": engine.reported(),
            "outstanding": {c: list(t) for c, t in current.outstanding.items() if t} if current else {},
            "policy": asdict(engine.policy),
            "previous_stragglers": list(stragglers),
            "previous_bounds": list(bounded),
        }


def status_after(start: dict[str, Any], records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The status of a round that opened with ``start`` once its journal's ``records`` are
    applied, in order: an accepted result strikes its task off (with the last one, the site
    has reported); a failure strikes the site's tasks off; a restart owes them again."""
    status = copy.deepcopy(start)
    outstanding, reported = status["outstanding"], status["reported"]
    failed: dict[str, list[str]] = {}
    for record in records:
        kind, who = record["kind"], record.get("collaborator", "")
        if kind == "result":
            owed = outstanding.get(who, [])
            if record["task"] in owed:
                owed.remove(record["task"])
            if not owed and outstanding.pop(who, None) is not None:
                reported.append(who)
        elif kind == "failed":
            failed[who] = outstanding.pop(who, [])
        elif kind == "resumed":  # the restarted engine owes the failed sites' tasks again, its clock anew
            outstanding.update({name: tasks for name, tasks in failed.items() if tasks})
            failed.clear()
            status["opened_at"] = record["at"]
    return status


def read_status(plan: Plan) -> dict[str, Any]:
    """The aggregator's saved state for ``plan`` (its newest readable snapshot, with the status
    its journal's records lead to), with whether an aggregator serves it now.

    An aggregator serves it while it holds the state directory's lock (aggregator/lock.py):
    the lock names the live process even after a restart that has not saved anything yet.
    Read only: what a restart would repair is left to it.
    """
    directory = plan.resolve_path(plan.model.aggregator.settings.state_dir)
    state = None
    for _, path in disk.snapshots(directory)[:2]:  # the newest, else the one a restart rolls back to
        try:
            state = disk.read_snapshot(path)
            break
        except AccordError:
            continue
    if state is None:
        raise AccordError(
            f"{directory} holds no saved round: this aggregator has not started a federation yet",
            "start it with `fx aggregator start`",
        )
    records = disk.read_records(directory / disk.journal_name(state["round"])).entries
    state["status"] = status_after(state["status"], records)
    state["results"] = list(disk.results_of(records))
    state["updated_at"] = max([state["saved_at"], *(r["at"] for r in records)])
    state["pid"] = next((r["pid"] for r in reversed(records) if r["kind"] == "resumed"), state["pid"])
    holder = holder_pid(directory)
    state["running"] = not state["finished"] and holder is not None
    if holder:
        state["pid"] = holder
    state["matches_plan"] = state.get("plan_hash") == plan.hash
    return state


def describe(state: dict[str, Any], now: float | None = None) -> str:
    """A few lines for a person: progress, reports, waits and the policy's limits."""
    now = time.time() if now is None else now
    status = state["status"]
    total, trained = status["total_rounds"], status["rounds_to_train"]
    lines = [f"plan {state['plan_hash'][:16]}..." + ("" if state["matches_plan"] else " (NOT this workspace's plan)")]
    if state["finished"]:
        lines.append(f"finished: all {trained} rounds ran" + _best(state))
        return "\n".join(lines)
    round_number = state["round"]
    label = "final validation of the last model" if round_number >= trained else f"round {round_number} of {trained}"
    lines.append(f"{label} ({round_number + 1}/{total})" + _best(state))
    since = now - float(state["updated_at"])
    lines.append(
        f"aggregator running (pid {state['pid']})"
        if state["running"]
        else f"aggregator NOT running (pid {state['pid']} gone; last saved {since:.0f} s ago): "
        "`fx aggregator start` resumes this round"
    )
    policy = status["policy"]
    elapsed = now - float(status["opened_at"])
    lines.append(f"round open for {elapsed:.0f} s; straggler policy: {_policy(policy)}")
    lines.append("reported:    " + (", ".join(status["reported"]) or "nobody yet"))
    late = policy["policy"] == "cutoff_time" and elapsed >= float(policy["cutoff_seconds"])
    waiting = [f"{name} ({', '.join(tasks)})" for name, tasks in sorted(status["outstanding"].items())]
    lines.append(("late:        " if late else "waiting for: ") + (", ".join(waiting) or "nobody"))
    if status["previous_stragglers"]:
        lines.append("left out of the previous round: " + ", ".join(status["previous_stragglers"]))
    if status.get("previous_bounds"):
        lines.append("update bounds that bit in the previous round: " + ", ".join(status["previous_bounds"]))
    return "\n".join(lines)


def _best(state: dict[str, Any]) -> str:
    best = state.get("best_score")
    return "" if best is None else f"; best score {best:.4f}"


def _policy(policy: dict[str, Any]) -> str:
    limits = f"at least {policy['min_reports']} report(s), deadline {policy['round_deadline_seconds']:g} s"
    if policy["policy"] == "cutoff_time":
        return f"cutoff_time (cut-off {policy['cutoff_seconds']:g} s, {limits})"
    if policy["policy"] == "percentage":
        return f"percentage ({policy['percentage']:.0%} of collaborators, {limits})"
    return f"wait_for_all ({limits})"
