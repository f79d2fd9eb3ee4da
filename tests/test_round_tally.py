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
from test_secure_restart import NAMES, SETTINGS, _engine
from test_secure_rounds_checked import _reveal, _to_unmask

from accord.aggregator import phase_checkpoint
from accord.collaborator.secure_site import SecureSite
from accord.errors import RefusedError
from accord.messages import TaskResult
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
    pytest.importorskip("cryptography")
    engine = _engine()
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    _to_unmask(engine, sites)
    checkpoint = engine.phase_checkpoint()
    assert checkpoint is not None
    _saved_with(tmp_path, checkpoint, f'{{"metrics": {metrics}, "records": {records}, "failed": {{}}, "slowest": 0.0}}')
    loaded = phase_checkpoint.load(tmp_path)
    assert loaded is None
    restarted = _engine(resume=loaded)  # the round runs its phases again, from the first
    assert restarted.current.phase == "advertise"


def test_a_loadable_tally_closes_the_resumed_round(tmp_path) -> None:
    """The bounds are those of a result: a tally at them loads, resumes and closes the round."""
    pytest.importorskip("cryptography")
    engine = _engine()
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    _to_unmask(engine, sites)
    checkpoint = engine.phase_checkpoint()
    assert checkpoint is not None
    tally = '{"metrics": [["aggregated_model_validation", "accuracy", [1e12, -1e12], [1e12, 1e12]]], "records": [], "failed": {}, "slowest": 0.0}'
    _saved_with(tmp_path, checkpoint, tally)
    restarted = _engine(resume=phase_checkpoint.load(tmp_path))
    assert restarted.current.phase == "unmask"
    outcome = None
    for name in NAMES:
        outcome = _reveal(restarted, sites, name) or outcome
    assert outcome is not None and outcome.metrics["aggregated_model_validation/accuracy"] == 0.0
