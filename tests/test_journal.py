"""The journal's own guarantees, unit by unit: the strategy's state round-trips with a round's
snapshot, per-result cost stays one record, the status is derived from the records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accord.aggregator.journal import Journal
from accord.aggregator.saved import read_records
from accord.aggregator.status import status_after
from accord.errors import AccordError
from accord.messages import TaskResult
from accord.strategies.seam import StrategyState
from accord.tensors.codec import TensorAssembler, iter_tensor_chunks
from accord.tensors.state import save_state, tensor_specs

MODEL = {"w": np.arange(4, dtype=np.float32)}
HASH = "ab" * 48


def result(name: str, task: str = "train") -> TaskResult:
    return TaskResult(name, 0, task, 10, {"loss": 0.5}, dict(MODEL) if task == "train" else None, False, 0.1)


def test_the_strategys_state_is_saved_with_the_rounds_start_and_loaded(tmp_path: Path) -> None:
    journal = Journal(tmp_path, HASH)
    velocity = {"v": np.linspace(0, 1, 4).astype(np.float64)}
    journal.open_round(0, MODEL, None, {}, StrategyState())
    journal.open_round(1, MODEL, 0.5, {}, StrategyState({"rounds": 1, "beta": 0.9}, velocity))
    journal.close()
    assert not (tmp_path / "strategy-00000.safetensors").exists()  # no tensors, no file
    saved = Journal(tmp_path, HASH).load()
    assert saved is not None and saved.round_number == 1 and saved.strategy is not None
    assert saved.strategy.values == {"rounds": 1, "beta": 0.9}
    np.testing.assert_array_equal(saved.strategy.tensors["v"], velocity["v"])
    assert saved.strategy.tensors["v"].dtype == np.float64


def test_a_strategy_file_cut_short_rolls_back_to_the_previous_round(tmp_path: Path, caplog) -> None:
    journal = Journal(tmp_path, HASH)
    journal.open_round(0, MODEL, None, {}, StrategyState({"rounds": 0}, {"v": np.zeros(4)}))
    journal.add_result(result("a"), journal.stage(result("a")))
    journal.open_round(1, MODEL, None, {}, StrategyState({"rounds": 1}, {"v": np.ones(4)}))
    journal.close()
    data = (tmp_path / "strategy-00001.safetensors").read_bytes()
    (tmp_path / "strategy-00001.safetensors").write_bytes(data[:-8])
    with caplog.at_level("WARNING", logger="accord.aggregator"):
        saved = Journal(tmp_path, HASH).load()
    assert saved is not None and saved.round_number == 0 and saved.strategy.values == {"rounds": 0}
    assert [r["collaborator"] for r in saved.results] == ["a"]
    assert "snapshot-00001.json is damaged: the file it names strategy-00001.safetensors is" in caplog.text
    assert "rolled back to the previous saved state" in caplog.text and "snapshot-00000.json" in caplog.text


def test_a_strategy_whose_values_are_not_json_fails_with_the_fix(tmp_path: Path) -> None:
    journal = Journal(tmp_path, HASH)
    with pytest.raises(AccordError, match="values are not plain JSON") as refused:
        journal.open_round(0, MODEL, None, {}, StrategyState({"moment": np.float32(1.0)}))
    assert "arrays go in `tensors`" in refused.value.fix
    with pytest.raises(AccordError, match="values are not plain JSON"):
        journal.open_round(0, MODEL, None, {}, StrategyState({"lr": float("nan")}))


def test_each_result_appends_one_record_of_a_size_independent_of_the_round(tmp_path: Path) -> None:
    journal = Journal(tmp_path, HASH)
    journal.open_round(0, MODEL, None, {"assigned": [f"site{i}" for i in range(1000)]}, StrategyState())
    path = tmp_path / "journal-00000.jsonl"
    sizes = []
    for i in range(50):
        before = path.stat().st_size
        journal.add_result(result(f"site{i:03d}", "validate"), None)
        sizes.append(path.stat().st_size - before)
    journal.close()
    assert max(sizes) < 300 and max(sizes) - min(sizes) <= 4  # only the time stamp's digits vary
    assert len(read_records(path).entries) == 50


def test_the_status_is_the_snapshots_with_the_records_applied() -> None:
    start = {"opened_at": 1.0, "reported": [], "outstanding": {"a": ["v", "train"], "b": ["train"], "c": ["train"]}}
    records = [
        {"kind": "result", "collaborator": "a", "task": "v", "at": 2.0},
        {"kind": "failed", "collaborator": "b", "at": 3.0},
        {"kind": "result", "collaborator": "c", "task": "train", "at": 4.0},
    ]
    status = status_after(start, records)
    assert status["outstanding"] == {"a": ["train"]} and status["reported"] == ["c"]
    assert start["outstanding"]["a"] == ["v", "train"]  # the snapshot's own status is not changed
    resumed = status_after(start, [*records, {"kind": "resumed", "pid": 7, "at": 9.0}])
    assert resumed["outstanding"] == {"a": ["train"], "b": ["train"]} and resumed["opened_at"] == 9.0  # b owes again


def test_a_state_of_the_accord_before_the_journal_is_refused_with_the_way_out(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(AccordError, match="saved by an earlier Accord") as refused:
        Journal(tmp_path, HASH).load()
    assert "--fresh" in refused.value.fix


def test_a_result_received_chunk_by_chunk_is_the_file_save_state_writes(tmp_path: Path) -> None:
    """The staged file is laid out from the model's specs and written at each chunk's offset,
    in any tensor order: byte for byte what save_state writes of the same tensors."""
    model = {"a": np.arange(1000, dtype=np.float32), "b": np.ones((3, 5), np.int64), "c": np.zeros((0, 2), np.float16)}
    journal = Journal(tmp_path, HASH)
    staged = journal.receiving(tensor_specs(model), "a test result")
    assembler = TensorAssembler(tensor_specs(model), max_total_bytes=1 << 20, destination=staged)
    for chunk in iter_tensor_chunks({name: model[name] for name in ("b", "c", "a")}, 300):
        assembler.add(*chunk)
    assert assembler.finish() is staged
    name = staged.commit()
    save_state(tmp_path / "reference.safetensors", model)
    assert (tmp_path / name).read_bytes() == (tmp_path / "reference.safetensors").read_bytes()
    assert all(np.array_equal(journal.view(name)[key], value) for key, value in model.items())


def test_a_result_missing_a_tensor_is_not_read_as_zeros_and_its_partial_file_goes_on_load(tmp_path: Path) -> None:
    journal = Journal(tmp_path, HASH)
    journal.open_round(0, MODEL, None, {}, StrategyState())
    specs = {"w": ("float32", (4,)), "v": ("float32", (2,))}
    staged = journal.receiving(specs, "a test result")
    assembler = TensorAssembler(specs, max_total_bytes=1 << 20, destination=staged)
    assembler.add("w", "float32", (4,), 0, MODEL["w"].tobytes())
    assert list(assembler.finish()) == ["w"]  # "v" never came: the engine refuses the names
    journal.close()
    assert len(list(tmp_path.glob(".result-*.tmp"))) == 1  # as a kill would leave it
    Journal(tmp_path, HASH).load()
    assert not list(tmp_path.glob(".result-*"))
