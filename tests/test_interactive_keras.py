"""A Keras experiment of the interactive API, run from the workspace a site imports (in one process)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cell, write_digits_shards

from accord.aggregator.runtime import AggregatorRuntime
from accord.collaborator.data_config import record_data_path
from accord.collaborator.site import build_collaborator
from accord.experiment.local import free_port
from accord.interactive import Federation, FLExperiment
from accord.metric_records import read_metrics
from accord.plan.loader import load_plan
from accord.tensors.state import load_state
from accord.transport.inprocess import InProcessClient
from accord.workspace.archive import import_workspace

ROUNDS = 3

NOTEBOOK = '''
import keras
import numpy as np

from accord.interactive import DataInterface, ModelInterface, TaskInterface


def build_model():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    return model


class Shard(DataInterface):
    def _arrays(self, split):
        with np.load(self.data_path, allow_pickle=False) as arrays:
            return arrays[f"x_{split}"], arrays[f"y_{split}"]

    def get_train_loader(self):
        return self._arrays("train")

    def get_valid_loader(self):
        return self._arrays("valid")

    def get_train_data_size(self):
        return len(self._arrays("train")[1])

    def get_valid_data_size(self):
        return len(self._arrays("valid")[1])


TI = TaskInterface()


@TI.add_kwargs(epochs=3)
@TI.register_fl_task(model="model", data_loader="data", kind="train")
def fit(model, data, batch_size, epochs=1):
    history = model.fit(*data, epochs=epochs, batch_size=batch_size, verbose=0)
    return {"loss": history.history["loss"][-1]}


@TI.register_fl_task(model="model", data_loader="data")
def evaluate(model, data):
    return {"accuracy": float(np.mean(model.predict(data[0], verbose=0).argmax(axis=1) == data[1]))}
'''


def test_a_keras_experiment_runs_from_the_imported_workspace(tmp_path: Path) -> None:
    notebook: dict = {}
    run_cell(NOTEBOOK, notebook)
    TI = notebook["TI"]
    TI.add_kwargs(batch_size=32)(notebook["fit"])
    (shard,), _, _ = write_digits_shards(tmp_path / "data", 1)
    federation = Federation(tmp_path / "operator", port=free_port())
    archive = FLExperiment(federation, "keras-digits").prepare_workspace_distribution(
        notebook["ModelInterface"](notebook["build_model"], framework="keras"), TI, notebook["Shard"](),
        rounds_to_train=ROUNDS, opt_treatment="CONTINUE_GLOBAL",
    )
    initial = load_state(federation.workspace / "save" / "init.safetensors")
    assert "sequential/dense/kernel" in initial and "__opt__.adam/iteration" in initial

    site = import_workspace(archive, tmp_path / "site").workspace
    record_data_path(site / "plan" / "data.yaml", "site1", str(shard))
    site_plan = load_plan(site / "plan" / "plan.yaml")
    assert site_plan.model.task_runner.template == "accord.interactive.keras_runner.KerasInteractiveRunner"
    assert site_plan.model.tasks.settings["train"].kwargs == {"epochs": 3, "batch_size": 32}
    runtime = AggregatorRuntime(load_plan(federation.plan_path, {"collaborators": ["site1"]}))
    client = InProcessClient(runtime, "site1", site_plan.hash, 1.0)
    assert build_collaborator(site_plan, "site1", client).run() == ROUNDS + 1
    assert runtime.finished
    accuracy = [
        r.value for r in read_metrics(federation.workspace / "logs" / "metrics.jsonl")
        if r.origin == "aggregator" and r.task == "aggregated_model_validation" and r.metric == "accuracy"
    ]
    assert len(accuracy) == ROUNDS + 1 and accuracy[-1] >= 0.9, accuracy
    print(f"interactive API, Keras: per round {[round(a, 4) for a in accuracy]}")
