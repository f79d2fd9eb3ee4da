"""The runtime's construction from the plan: its RoundEngine, resumed from the saved state
(aggregator/journal.py) unless told otherwise, and the logs its events are written to."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from accord.aggregator import phase_checkpoint
from accord.aggregator.engine import RoundEngine
from accord.aggregator.event_log import EventLog, events_path, events_sink
from accord.aggregator.events import Sink
from accord.aggregator.journal import Journal
from accord.aggregator.mask_pool import MaskPool, mask_pool_for
from accord.aggregator.placement import initial_model
from accord.aggregator.plan_engine import assigner_for, engine_for, strategy_for
from accord.aggregator.reporting import RecordSink, metrics_sink, phase_sink
from accord.aggregator.saved import SavedRound
from accord.metric_records import MetricsLog
from accord.plan.loader import Plan
from accord.tensors.space import MEMORY
from accord.tensors.state import ModelState

if TYPE_CHECKING:
    from accord.secagg.signing import Verifier
    from accord.transport.traffic import Traffic

log = logging.getLogger("accord.aggregator")


@dataclass(frozen=True)
class Started:
    """What ``start_engine`` built: the engine, its journal and the saved round it resumes (None:
    a fresh start), the mask pool of a secure strategy, and the workspace hash."""

    engine: RoundEngine
    journal: Journal
    saved: SavedRound | None
    masks: MaskPool | None
    workspace_hash: str


def start_engine(
    plan: Plan, model: ModelState | None, clock: Callable[[], float], fresh: bool, verify_sites: Verifier | None, pooled_masks: bool = False
) -> Started:
    """The plan's engine, from ``model`` if given, else resumed from the saved state unless
    ``fresh`` (which is then cleared); secure rounds signed when ``verify_sites`` is given, their
    masks expanded over a MaskPool when ``pooled_masks`` (the serving CLI's: its workers are
    spawned, which re-imports ``__main__``, so never under a user's script or notebook)."""
    settings = plan.model.aggregator.settings
    assigner = assigner_for(plan)
    strategy = strategy_for(plan)  # refused before any saved state is touched
    if verify_sites is not None:  # the deployment's: secure rounds signed (aggregator/serve.py)
        from accord.strategies.secure import signed

        strategy = signed(strategy, verify_sites)
    masks = mask_pool_for(strategy) if pooled_masks else None
    workspace_hash = plan.workspace_hash()  # once: the code does not change while serving
    log.info("workspace hash %s (plan + src/ + requirements.txt; every site must have the same)", workspace_hash)
    journal = Journal(plan.resolve_path(settings.state_dir), plan.hash)
    saved = None if fresh or model is not None else journal.load()
    if saved is None:
        journal.clear()
        phase_checkpoint.remove(journal.directory)
    initial, space = (model, MEMORY) if model is not None else initial_model(plan, saved, journal)
    resume = None if saved is None else phase_checkpoint.load(journal.directory)
    engine = engine_for(plan, assigner, strategy, initial, clock, saved, space=space, resume=resume)
    current = engine.current
    if resume is not None and current is not None and resume.round_number == current.number:
        if current.phase == resume.phase:
            log.info("round %d resumed at phase %s from %s", current.number, resume.phase, journal.directory / phase_checkpoint.NAME)
        else:
            log.warning("round %d: the checkpoint %s does not fit; its phases run again from %s", current.number, phase_checkpoint.NAME, current.phase)
    return Started(engine, journal, saved, masks, workspace_hash)


def open_logs(
    plan: Plan,
    started: Started,
    traffic: Traffic | None,
    record_sinks: Sequence[RecordSink],
    sinks: Sequence[Sink],
) -> tuple[MetricsLog, EventLog]:
    """The metrics log (kept up to the resumed round) and logs/events.jsonl, with the engine's
    sinks subscribed (aggregator/events.py): those two's, the phase lines', then ``sinks``."""
    engine, saved = started.engine, started.saved
    metrics_log = MetricsLog(plan.resolve_path(plan.model.aggregator.settings.metrics_path))
    metrics_log.keep_before(saved.round_number if saved else 0)
    event_log = EventLog(events_path(metrics_log.path), fresh=saved is None)
    event_log.write("started", round=engine.round_number, resumed=saved is not None)
    for sink in (metrics_sink(metrics_log, traffic, record_sinks), events_sink(event_log), phase_sink, *sinks):
        engine.events.subscribe(sink)
    return metrics_log, event_log
