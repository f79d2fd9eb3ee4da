"""The round tally a secure round's unmask checkpoint carries (aggregator/round_tally.py): what a
site sends cannot keep the checkpoint from being written (the aggregator would stop, each
round), and a phases.bin whose tally a site could not have made (a count, value or name no
result may carry; numbers beyond a float) is not loaded, rather than crashing the aggregator
at its start or at the round's close."""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import numpy as np
import pytest
from test_engine import FakeClock, make_engine
from test_secure_restart import NAMES, SETTINGS, _engine
from test_secure_rounds_checked import _reveal, _to_unmask

from accord.aggregator import phase_checkpoint
from accord.aggregator.stragglers import StragglerPolicy
from accord.collaborator.secure_site import SecureSite
from accord.errors import RefusedError
from accord.messages import TaskResult
from accord.plan.aggregator_settings import SecureAggregationSettings
from accord.strategies.fedavgm import FedAvgM
from accord.strategies.secure import SecureAggregation
from accord.strategies.secure_phases import MASKED, MASKED_DTYPE, PHASES


def _mask_result(engine, site, name, task, seconds):
    """``name``'s result for ``task`` of the mask phase, reporting ``seconds`` of task time."""
    tensors = None
    if task == "train":
        model = engine.model
        trained = {k: np.full_like(v, 0.1) for k, v in model.items()}
        reply = site.masked(TaskResult(name, 0, "train", 10, {}, trained), engine.assignment(name).payload, model)
        tensors = {MASKED: reply.tensors[MASKED].view(np.uint64).view(MASKED_DTYPE)}
    metrics = {"accuracy": 0.5} if "validation" in task else {}
    return TaskResult(name, 0, task, 10, metrics, tensors, task_seconds=seconds, model_digest=engine.model_digest, phase="mask")


def test_a_sites_absurd_task_times_are_refused_and_the_unmask_checkpoint_is_written(tmp_path) -> None:
    """Each task time finite, their sum not (1.7e308 twice): taken, it made the round's slowest
    task time infinite, the unmask checkpoint unwritable (JSON has no Infinity) and the
    runtime stop as the phase opened: any site could stop every secure round."""
    pytest.importorskip("cryptography")
    engine = _engine()
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    for phase in PHASES[:2]:
        for name in NAMES:
            payload = sites[name].answer(phase, 0, engine.assignment(name).payload, engine.model)
            engine.submit(TaskResult(name, 0, phase, 0, {}, model_digest=engine.model_digest, phase=phase, payload=payload))
    tasks = ("aggregated_model_validation", "train", "locally_tuned_model_validation")
    for name in NAMES:
        for task in tasks:
            honest = _mask_result(engine, sites[name], name, task, 2.0)
            if name == "a":
                with pytest.raises(RefusedError, match="task time"):
                    engine.submit(replace(honest, task_seconds=1.7e308))
            engine.submit(honest)
    assert engine.current.phase == "unmask"
    checkpoint = engine.phase_checkpoint()
    assert checkpoint is not None and checkpoint.tally.slowest == 6.0
    phase_checkpoint.save(tmp_path, checkpoint)
    assert phase_checkpoint.load(tmp_path) == checkpoint


def _saved_with(directory, checkpoint, tally_json: str) -> None:
    """``checkpoint`` saved with its header's tally replaced by the JSON text ``tally_json``."""
    data = checkpoint.to_bytes()
    (size,) = struct.unpack(">I", data[:4])
    header = json.loads(data[4 : 4 + size])
    header["tally"] = "TALLY"
    encoded = json.dumps(header).replace('"TALLY"', tally_json).encode()
    (directory / phase_checkpoint.NAME).write_bytes(struct.pack(">I", len(encoded)) + encoded + checkpoint.state)


def _at_unmask():
    """Four sites' secure round taken to its unmask: the sites and its checkpoint."""
    pytest.importorskip("cryptography")
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    engine = _engine()
    _to_unmask(engine, sites)
    return sites, engine.phase_checkpoint()


@pytest.mark.parametrize(
    "metrics, records",
    [
        ('[["aggregated_model_validation", "accuracy", [0.5, 0.5], [1e308, 1e308]]]', "[]"),  # counts no result has: the close overflowed
        ('[["aggregated_model_validation", "accuracy", [0.5, 0.7], [10, -5]]]', "[]"),  # a negative count: a mean beyond its values
        ('[["aggregated_model_validation", "accuracy", [0.5], [0]]]', "[]"),
        ('[["aggregated_model_validation", "accuracy", [1e300], [10]]]', "[]"),  # a value no result may carry
        ('[["aggregated_model_validation", "accuracy", [0.5], [1' + "0" * 400 + "]]]", "[]"),  # an int beyond a float
        ("[]", '[["a", "train", "loss", 1' + "0" * 400 + "]]"),
        ("[]", '[["a", "train", "loss\\nround 0 done: forged", 0.5]]'),  # a metric name no result may carry
        ("[]", "[" * 100_000 + "]" * 100_000),  # nested past the parser's recursion
    ],
)
def test_a_tally_no_site_could_have_sent_is_not_loaded(tmp_path, metrics, records) -> None:
    _, checkpoint = _at_unmask()
    _saved_with(tmp_path, checkpoint, f'{{"metrics": {metrics}, "records": {records}, "failed": {{}}, "slowest": 0.0}}')
    loaded = phase_checkpoint.load(tmp_path)
    assert loaded is None
    restarted = _engine(resume=loaded)  # the round runs its phases again, from the first
    assert restarted.current.phase == "advertise"


def test_a_loadable_tally_closes_the_resumed_round(tmp_path) -> None:
    """The bounds are those of a result: a tally at them loads, resumes and closes the round."""
    sites, checkpoint = _at_unmask()
    tally = '{"metrics": [["aggregated_model_validation", "accuracy", [1e12, -1e12], [1e12, 1e12]]], "records": [], "failed": {}, "slowest": 0.0}'
    _saved_with(tmp_path, checkpoint, tally)
    restarted = _engine(resume=phase_checkpoint.load(tmp_path))
    assert restarted.current.phase == "unmask"
    outcome = None
    for name in NAMES:
        outcome = _reveal(restarted, sites, name) or outcome
    assert outcome is not None and outcome.metrics["aggregated_model_validation/accuracy"] == 0.0


#: six sites, threshold 3: e fails in advertise, d validates and is then late with its training
#: (the mask phase closes at its cut-off without it), a, b, c and f take part to the end
SIX = ("a", "b", "c", "d", "f", "e")
SURVIVORS = ("a", "b", "c", "f")
THRESHOLD = SecureAggregationSettings(enabled=True, threshold=3)
CUTOFF = StragglerPolicy("cutoff_time", cutoff_seconds=10.0)


def _six(clock, **options):
    strategy = SecureAggregation(FedAvgM(momentum=0.0), THRESHOLD)
    return make_engine(SIX, rounds=2, strategy=strategy, clock=clock, policy=CUTOFF, **options)


def _phase_reply(engine, name, phase, payload=b"", failure=""):
    digest = "" if failure else engine.model_digest
    return engine.submit(TaskResult(name, engine.round_number, phase, 0, {}, model_digest=digest, phase=phase, payload=payload, failure=failure))


def _six_to_unmask(engine, clock, sites) -> None:
    number = engine.round_number
    _phase_reply(engine, "e", "advertise", failure="advertise failed (OSError)")
    for phase in PHASES[:2]:
        for name in SIX[:5]:
            _phase_reply(engine, name, phase, sites[name].answer(phase, number, engine.assignment(name).payload, engine.model))
    assert engine.current.phase == "mask"
    for at, name in enumerate(SIX[:5], 1):
        given, model = engine.assignment(name), engine.model
        for task in given.tasks:
            if task.name == "train" and name == "d":
                break
            tensors, metrics = None, {"accuracy": 0.4 + 0.1 * at + number, "loss": 1.0 / at}
            if task.name == "train":
                trained = {k: np.full_like(v, 0.1 * at) for k, v in model.items()}
                reply = sites[name].masked(TaskResult(name, number, "train", 10 * at, {}, trained), given.payload, model)
                tensors, metrics = {MASKED: reply.tensors[MASKED].view(np.uint64).view(MASKED_DTYPE)}, {"loss": 2.0 / at}
            engine.submit(TaskResult(name, number, task.name, 10 * at, metrics, tensors, task_seconds=1.5 * at, model_digest=engine.model_digest, phase="mask"))
    clock.now += 11.0
    assert engine.tick() is None and engine.current.phase == "unmask" and engine.current.members == SURVIVORS


def _summary(outcome) -> dict:
    return {
        "metrics": outcome.metrics, "records": list(outcome.records), "stragglers": outcome.stragglers, "failed": outcome.failed,
        "slowest": outcome.slowest_task_seconds, "best": outcome.best_score, "best_model": outcome.best_model is not None,
        "model": {k: np.asarray(v).tolist() for k, v in outcome.model.items()},
    }


@pytest.mark.parametrize("round_number", [0, 1])
def test_a_round_resumed_twice_closes_as_without_a_restart(tmp_path, round_number) -> None:
    """A site failed, one dropped after its validation, the round resumed twice from its
    checkpoint (after a reveal each time), in round 0 or in round 1: its metrics, records,
    stragglers, failures, slowest task time, best score and model are an uninterrupted run's."""
    pytest.importorskip("cryptography")
    clock = FakeClock()
    engine = _six(clock)
    sites = {name: SecureSite(name, THRESHOLD) for name in SIX}
    if round_number:  # round 0 closes uninterrupted; a restart would resume in round 1
        _six_to_unmask(engine, clock, sites)
        for name in SURVIVORS:
            _reveal(engine, sites, name)
        sites = {name: SecureSite(name, THRESHOLD) for name in SIX}
    assert engine.round_number == round_number
    _six_to_unmask(engine, clock, sites)
    checkpoint = engine.phase_checkpoint()
    assert checkpoint is not None
    phase_checkpoint.save(tmp_path, checkpoint)
    model, best = engine.model, engine.best_score
    uninterrupted = None
    for name in SURVIVORS:
        uninterrupted = _reveal(engine, sites, name) or uninterrupted
    restarted = None
    for revealed in ((), ("a",), ("a", "b")):  # three starts from the checkpoint: each after a reveal more
        if restarted is not None:
            assert restarted.current.phase == "unmask"
        restarted = _six(FakeClock(), resume=phase_checkpoint.load(tmp_path), model=model, round_number=round_number, best_score=best)
        for name in revealed:
            assert _reveal(restarted, sites, name) is None
    outcome = None
    for name in ("c", "f"):  # the third start's: a and b revealed again before them
        outcome = _reveal(restarted, sites, name) or outcome
    assert uninterrupted is not None and outcome is not None
    assert uninterrupted.stragglers == ("d",) and uninterrupted.failed == ("e",) and uninterrupted.slowest_task_seconds == 4.5 * 5
    assert _summary(outcome) == _summary(uninterrupted)
