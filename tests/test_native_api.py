"""accord.native: the doc's example runs unchanged, data splits, plan overrides, failures surface."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import accord.native as fx
from accord.errors import PlanError
from accord.runners.numpy_runner import SklearnLinearRunner

DOC = Path(__file__).resolve().parents[1] / "docs" / "native-api.md"


def python_block(text: str, index: int) -> str:
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) > index, f"docs/native-api.md has no ```python block number {index + 1}"
    return blocks[index]


@pytest.mark.parametrize("index, framework", [(0, "torch"), (1, "keras"), (3, "torch")])
def test_doc_example_runs_and_reaches_95_percent(tmp_path: Path, index: int, framework: str) -> None:
    script = tmp_path / "example.py"
    script.write_text(python_block(DOC.read_text(encoding="utf-8"), index), encoding="utf-8")
    assert f"import {framework}" in script.read_text()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = re.search(r"final accuracy: ([0-9.]+)", done.stdout)
    assert found, done.stdout[-2000:]
    assert float(found.group(1)) >= 0.95
    assert "round 1 of" in done.stdout  # the aggregator's round lines are printed


def _data(n_train: int = 200, n_valid: int = 50, classes: int = 4) -> fx.FederatedDataSet:
    rng = np.random.default_rng(0)
    return fx.FederatedDataSet(
        rng.normal(size=(n_train, 3)), rng.integers(0, classes, n_train),
        rng.normal(size=(n_valid, 3)), rng.integers(0, classes, n_valid),
        batch_size=16, num_classes=classes,
    )


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_split_covers_every_sample_once(partition: str) -> None:
    data = _data()
    shards = data.split(3, partition=partition, alpha=0.3, seed=1)
    assert sum(s.train_size for s in shards) == data.train_size
    assert sum(s.valid_size for s in shards) == data.valid_size
    rows = np.concatenate([x for s in shards for x, _ in s.train_batches(seed=0)])
    everything = np.concatenate([x for x, _ in data.train_batches(seed=0)])
    assert sorted(map(tuple, rows)) == sorted(map(tuple, everything))
    assert all(s.num_classes == 4 and s.train_size > 0 for s in shards)


def _sklearn_sites(names: int = 2) -> dict[str, fx.FederatedModel]:
    model = fx.FederatedModel(runner=lambda: SklearnLinearRunner(classes=4, n_features=3), data_loader=_data())
    return fx.setup(num_collaborators=names, model=model)


@pytest.mark.parametrize(
    "key, shown",
    [
        ("aggregator.settings.rounds_to_trian", "rounds_to_trian"),
        ("aggregatr.settings.rounds_to_train", "aggregatr"),
        ("task_runner.settings.seed", "task_runner.settings.seed"),
    ],
)
def test_bad_override_key_is_refused_by_name(tmp_path: Path, key: str, shown: str) -> None:
    with pytest.raises(PlanError, match=re.escape(shown)):
        fx.run_experiment(_sklearn_sites(), override_config={key: 1}, workspace=tmp_path)


class _Broken(SklearnLinearRunner):
    def train(self, data, **kwargs):  # type: ignore[override]
        raise RuntimeError("disk on fire")


def test_collaborator_exception_surfaces_without_hanging(tmp_path: Path) -> None:
    good = fx.FederatedModel(runner=lambda: SklearnLinearRunner(classes=4, n_features=3), data_loader=_data())
    bad = fx.FederatedModel(runner=lambda: _Broken(classes=4, n_features=3), data_loader=_data())
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fx.run_experiment({"good": good, "bad": bad}, {"aggregator.settings.rounds_to_train": 3}, workspace=tmp_path)
        except BaseException as exc:
            raised.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=300)  # a hang shows as a thread still running, not as a slow run
    assert not runner.is_alive(), "run_experiment hung after a collaborator failed"
    assert len(raised) == 1 and isinstance(raised[0], RuntimeError) and "disk on fire" in str(raised[0])
    assert any("'bad'" in note for note in getattr(raised[0], "__notes__", []))
    assert fx.last_run is not None and set(fx.last_run.errors) == {"bad"}


def test_sites_start_from_identical_weights_and_import_is_light() -> None:
    torch = pytest.importorskip("torch")
    model = fx.FederatedModel(lambda: torch.nn.Linear(3, 4), data_loader=_data())
    sites = list(fx.setup(num_collaborators=2).values())
    first, second = (s.runner.get_weights() for s in sites)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert sites[0].model is not sites[1].model is not model.model
    code = "import sys, accord.native; sys.exit([m for m in ('torch', 'sklearn', 'keras') if m in sys.modules] or 0)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_keras_builder_with_automatic_names_federates(tmp_path) -> None:
    """Each collaborator's Keras copy gets the same variable names, even unnamed and pre-compiled."""
    code = '''
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
import keras
from sklearn.datasets import load_digits
import accord.native as fx

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
def build_model():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
fx.init("torch_digits", log_level="WARNING")
data = fx.FederatedDataSet(x[:1400], y[:1400], x[1400:], y[1400:], batch_size=32, num_classes=10)
fx.FederatedModel(build_model, data_loader=data)
fx.run_experiment(fx.setup(num_collaborators=2), override_config={"aggregator.settings.rounds_to_train": 1})
print("rounds ok", fx.last_run.final("aggregated_model_validation/accuracy"))
'''
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rounds ok" in done.stdout


def test_a_strategy_and_its_per_round_config_reach_native_sites(tmp_path) -> None:
    """FedProx chosen by a plan override: the native sites accept its proximal_mu (their plan's
    strategy declares it) and train with the proximal term; the plan's client mods run too."""
    torch = pytest.importorskip("torch")
    fx.init("torch_digits", log_level="WARNING")
    model = fx.FederatedModel(lambda: torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)), data_loader=_data())
    initial = model.runner.get_weights()
    overrides = {
        "aggregator.settings.rounds_to_train": 2,
        "aggregator.settings.strategy": {"template": "accord.strategies.FedProx", "settings": {"proximal_mu": 0.5}},
        "collaborator.settings.mods": [{"template": "accord.mods.ClipUpdate", "settings": {"max_norm": 1e-6}}],
    }
    fx.run_experiment(fx.setup(num_collaborators=2, model=model), override_config=overrides, workspace=tmp_path)
    result = fx.last_run
    assert result is not None and not result.errors and result.model is not None
    terms = [r.value for r in result.records if r.task == "train" and r.metric == "proximal_term" and r.origin != "aggregator"]
    assert len(terms) == 4  # each site's training reported its proximal term, both rounds
    final = result.model.runner.get_weights()
    moved = np.sqrt(sum(float(np.sum((final[k].astype(np.float64) - initial[k]) ** 2)) for k in final))
    assert 0 < moved <= 2.1e-6  # each round's mean of updates clipped to norm 1e-6 at the sites


def test_many_sites_run_on_a_few_threads_and_a_failure_still_surfaces(tmp_path: Path) -> None:
    from accord.native.experiment import THREAD_PER_SITE_UP_TO

    count = THREAD_PER_SITE_UP_TO + 24
    model = fx.FederatedModel(runner=lambda: SklearnLinearRunner(classes=4, n_features=3), data_loader=_data())
    sites = fx.setup(num_collaborators=count, model=model)
    most = [threading.active_count()]
    before = most[0]
    train = SklearnLinearRunner.train

    def counting(self, data, **kwargs):  # type: ignore[no-untyped-def]
        most[0] = max(most[0], threading.active_count())
        return train(self, data, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SklearnLinearRunner, "train", counting)
        fx.run_experiment(sites, {"aggregator.settings.rounds_to_train": 2}, workspace=tmp_path / "good")
    result = fx.last_run
    assert result is not None and not result.errors and result.model is not None
    assert len(result.aggregated("aggregated_model_validation/accuracy")) == 3  # 2 rounds and the final validation
    assert most[0] - before <= (os.cpu_count() or 1) + 1  # a pool of threads, not one per site

    sites["collaborator7"] = fx.FederatedModel(runner=lambda: _Broken(classes=4, n_features=3), data_loader=_data())
    with pytest.raises(RuntimeError, match="disk on fire") as raised:
        fx.run_experiment(sites, {"aggregator.settings.rounds_to_train": 3}, workspace=tmp_path / "bad")
    assert any("'collaborator7'" in note for note in getattr(raised.value, "__notes__", []))
    assert fx.last_run is not None and set(fx.last_run.errors) == {"collaborator7"}
