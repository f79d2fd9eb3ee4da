"""accord.compat.openfl: OpenFL's runner and loader classes on Accord's protocols, and OpenFL's
module names resolving to them only while a workspace's code is imported."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from accord.compat.openfl.loaders import PyTorchDataLoader
from accord.compat.openfl.metric import Metric
from accord.compat.openfl.torch_runner import PyTorchTaskRunner
from accord.data.base import DataLoader
from accord.errors import AccordError
from accord.plan.loader import load_plan
from accord.plan.objects import use_workspace
from accord.runners.base import OPTIMIZER_PREFIX, TaskRunner
from accord.runners.from_plan import build_runner

DATA = Path(__file__).parent / "data" / "openfl"

WORKSPACE_CODE = """
from openfl.federated import PyTorchDataLoader, PyTorchTaskRunner
from openfl.federated.task.runner_pt import PyTorchTaskRunner as Deep
from openfl.utilities import Metric
"""


def workspace_with(tmp_path: Path, source: str) -> Path:
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "__init__.py").write_text("")
    (workspace / "src" / "code.py").write_text(textwrap.dedent(source))
    return workspace


def load_code(workspace: Path, name: str = "src.code"):
    use_workspace(workspace)
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_a_workspace_importing_openfl_gets_accords_classes_and_no_alias_is_left(tmp_path: Path) -> None:
    code = load_code(workspace_with(tmp_path, WORKSPACE_CODE))
    assert code.PyTorchTaskRunner is PyTorchTaskRunner is code.Deep
    assert code.PyTorchDataLoader is PyTorchDataLoader
    assert code.Metric is Metric
    assert not [n for n in sys.modules if n == "openfl" or n.startswith("openfl.")]
    # outside a workspace's import, `import openfl` finds only what Python itself finds (another
    # test may have put bench/peers, with its OpenFL peer workspace folder, on sys.path): no alias of Accord's
    spec = importlib.util.find_spec("openfl")
    assert spec is None or not any("accord" in str(place) for place in (spec.submodule_search_locations or [spec.origin]))
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("openfl.federated")


def test_an_openfl_module_accord_does_not_provide_is_refused_with_what_it_does(tmp_path: Path) -> None:
    workspace = workspace_with(tmp_path, "import openfl.interface.cli\n")
    with pytest.raises(ModuleNotFoundError, match=r"openfl\.interface.*accord\.compat\.openfl.*openfl\.federated"):
        load_code(workspace)


def test_a_real_installed_openfl_is_never_what_workspace_code_gets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "site-packages"
    (fake / "openfl" / "federated").mkdir(parents=True)
    (fake / "openfl" / "__init__.py").write_text("REAL = True\n")
    (fake / "openfl" / "federated" / "__init__.py").write_text("raise RuntimeError('the real openfl ran')\n")
    monkeypatch.syspath_prepend(str(fake))
    real = importlib.import_module("openfl")  # imported before the workspace's code
    try:
        code = load_code(workspace_with(tmp_path, WORKSPACE_CODE))
        assert code.PyTorchTaskRunner is PyTorchTaskRunner
        assert sys.modules["openfl"] is real  # set aside while the workspace loaded, then restored
    finally:
        sys.modules.pop("openfl", None)


def test_a_finder_placed_before_accord_s_does_not_bring_in_a_real_openfl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path finder another package put first on sys.meta_path after Accord's (an import hook,
    an editable install) would find an installed openfl before the compat names did."""
    fake = tmp_path / "site-packages"
    (fake / "openfl" / "federated").mkdir(parents=True)
    (fake / "openfl" / "__init__.py").write_text("")
    (fake / "openfl" / "federated" / "__init__.py").write_text("raise RuntimeError('the real openfl ran')\n")

    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname.split(".")[0] != "openfl":
                return None
            return importlib.machinery.PathFinder.find_spec(fullname, [str(fake)] if "." not in fullname else path)

    load_code(workspace_with(tmp_path / "first", WORKSPACE_CODE))  # Accord's finder is in place
    monkeypatch.setattr(sys, "meta_path", [Hook(), *sys.meta_path])
    code = load_code(workspace_with(tmp_path, WORKSPACE_CODE))
    assert code.PyTorchTaskRunner is PyTorchTaskRunner
    assert not [n for n in sys.modules if n == "openfl" or n.startswith("openfl.")]


class Loader(PyTorchDataLoader):
    def __init__(self, data_path=None, batch_size: int = 4, **kwargs) -> None:
        super().__init__(batch_size, random_seed=1, **kwargs)
        self.feature_shape = [3]
        self.num_classes = 2
        if data_path is None:
            return
        rng = np.random.default_rng(int(data_path))
        self.X_train = rng.normal(size=(10, 3)).astype(np.float32)
        self.y_train = (self.X_train[:, 0] > 0).astype(np.int64)
        self.X_valid = rng.normal(size=(6, 3)).astype(np.float32)
        self.y_valid = (self.X_valid[:, 0] > 0).astype(np.int64)


class Runner(PyTorchTaskRunner):
    """An OpenFL-style runner that records what its epoch functions were given."""

    def __init__(self, **kwargs) -> None:
        super().__init__(device="cpu", **kwargs)
        self.model = torch.nn.Linear(3, 2)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.1)
        self.loss_fn = torch.nn.functional.cross_entropy
        self.seen: list[tuple[str, int, bool]] = []

    def train_(self, train_dataloader) -> Metric:
        sizes = [len(y) for _, y in train_dataloader]
        self.seen.append(("train", sum(sizes), self.training))
        return super().train_(self.data_loader.get_train_loader())

    def validate_(self, validation_dataloader) -> Metric:
        self.seen.append(("valid", sum(len(y) for _, y in validation_dataloader), self.training))
        return Metric(name="accuracy", value=np.array(0.5))


def test_the_torch_runner_is_an_accord_runner_calling_train_and_validate_with_the_loaders() -> None:
    runner, data = Runner(data_loader=Loader()), Loader(data_path=1)
    assert isinstance(runner, TaskRunner) and isinstance(data, DataLoader) and isinstance(runner, torch.nn.Module)
    assert runner.feature_shape == [3] and runner.num_classes == 2
    out = runner.train(data, epochs=2, metrics=["loss"])
    assert runner.seen == [("train", 10, True), ("train", 10, True)] and runner.data_loader is data
    assert set(out.metrics) == {"cross_entropy"} and np.isfinite(out.metrics["cross_entropy"]) and out.sample_count == 10
    out = runner.validate(data, apply="global")
    assert runner.seen[-1] == ("valid", 6, False)  # in eval mode
    assert out.metrics == {"accuracy": 0.5} and out.sample_count == 6
    assert runner.train(False) is runner and not runner.training  # still nn.Module's train(mode)
    # every participant builds the same initial model
    assert all(np.array_equal(a, b) for a, b in zip(Runner().get_weights().values(), Runner().get_weights().values()))


@pytest.mark.parametrize(
    "source, named",
    [
        ("def train_task(self, col_name, round_num, input_tensor_dict, epochs=1, **kwargs): pass", "train_task"),
        ("def validate_task(self, col_name, round_num, input_tensor_dict, **kwargs): pass", "validate_task"),
        ("def rebuild_model(self, round_num, input_tensor_dict, validation=False): pass", "rebuild_model"),
        ("def get_tensor_dict(self, with_opt_vars=False): return {}", "get_tensor_dict"),
        ("def initialize_tensorkeys_for_functions(self, with_opt_vars=False): pass", "initialize_tensorkeys_for_functions"),
        # OpenFL 1.0-1.5's TensorKey-level validate, under the name of Accord's own task
        ("def validate(self, col_name, round_num, input_tensor_dict, use_tqdm=False, **kwargs): pass", "validate"),
    ],
)
def test_tensorkey_level_overrides_are_refused_when_the_class_is_defined(source: str, named: str) -> None:
    namespace: dict = {"Runner": Runner}
    with pytest.raises(AccordError) as raised:
        exec(f"class Custom(Runner):\n    {source}\n", namespace)  # the test's own literal source
    message = str(raised.value)
    assert f"Custom overrides {named}, OpenFL's TensorKey-level task code, which Accord never calls" in message
    assert "train_(batches) / validate_(batches) returning a Metric" in message and "\n" not in message


def test_a_tensorkey_level_override_from_a_mixin_is_refused_too() -> None:
    class Mixin:
        def train_task(self, col_name, round_num, input_tensor_dict, **kwargs):
            raise AssertionError("never called by Accord")

    with pytest.raises(AccordError, match=r"Custom overrides train_task \(from .*Mixin\), OpenFL's TensorKey-level"):

        class Custom(Mixin, Runner):
            pass


def test_the_per_epoch_hooks_are_what_an_openfl_runner_overrides() -> None:
    """Supported: train_ / validate_ (OpenFL 1.6+), torch's older train_epoch as train_, and
    Accord-signature train / validate; the first kind is what Accord calls each epoch."""

    class Old(Runner):
        def train_epoch(self, batch_generator) -> Metric:
            self.seen.append(("epoch", sum(len(y) for _, y in batch_generator), self.training))
            return Metric(name="loss", value=np.array(0.25))

    class Own(Runner):
        def train_epoch(self, batch_generator) -> Metric:  # train_ defined too: train_ is what runs
            raise AssertionError("not called")

        def train_(self, train_dataloader) -> Metric:
            return Metric(name="loss", value=np.array(0.5))

    old = Old(data_loader=Loader())
    assert old.train(Loader(data_path=1), epochs=2).metrics == {"loss": 0.25}
    assert old.seen == [("epoch", 10, True), ("epoch", 10, True)]
    assert Own(data_loader=Loader()).train(Loader(data_path=1)).metrics == {"loss": 0.5}

    from accord.compat.openfl.keras_runner import KerasTaskRunner

    def train_iteration(self, batch_generator, metrics=None, **kwargs):  # OpenFL 1.9's Keras hook
        return [Metric(name="loss", value=np.array(0.1))]

    keras_style = type("KerasStyle", (KerasTaskRunner,), {"train_iteration": train_iteration})
    assert keras_style.train_ is train_iteration  # what KerasTaskRunner.train calls each epoch


def test_opt_treatments_on_the_torch_runner() -> None:
    data = Loader(data_path=1)
    runner = Runner(data_loader=data)
    runner.train(data)
    shipped = runner.get_weights(with_optimizer=True)  # CONTINUE_GLOBAL ships the moments
    moments = [k for k in shipped if k.startswith(OPTIMIZER_PREFIX)]
    assert moments and any(np.abs(shipped[k]).sum() > 0 for k in moments)
    other = Runner(data_loader=data)
    other.set_weights(shipped, with_optimizer=True)
    assert all(np.array_equal(other.get_weights(with_optimizer=True)[k], shipped[k]) for k in shipped)
    # CONTINUE_LOCAL: loading the global model keeps the local optimizer state
    state = runner.optimizer.state_dict()["state"]
    runner.set_weights(other.get_weights())
    assert runner.optimizer.state_dict()["state"].keys() == state.keys()
    # RESET: a fresh state, the same optimizer settings
    runner.reset_optimizer()
    assert not runner.optimizer.state and runner.optimizer.param_groups[0]["lr"] == 0.1


def test_a_runner_returning_no_metric_is_named() -> None:
    class Bad(Runner):
        def validate_(self, validation_dataloader):
            return 0.5

    with pytest.raises(AccordError, match=r"Bad\.validate_ returned float, not a Metric"):
        Bad().validate(Loader(data_path=1))
    with pytest.raises(AccordError, match="not one number"):
        from accord.compat.openfl.metric import metric_values

        metric_values(Metric("acc", np.array([0.1, 0.2])), "train_")


def test_the_plan_builds_an_openfl_runner_with_its_data_loader_without_data(tmp_path: Path) -> None:
    workspace = tmp_path / "torch_mnist"
    shutil.copytree(DATA / "torch_mnist", workspace)
    plan = load_plan(workspace / "plan" / "plan.yaml", workspace=workspace)
    runner = build_runner(plan)
    assert type(runner).__name__ == "TemplateTaskRunner" and type(runner.data_loader).__name__ == "PyTorchMNISTInMemory"
    assert runner.data_loader.X_train is None  # built as OpenFL builds the aggregator's model
    assert runner.feature_shape == [1, 28, 28]
    assert list(runner.get_weights())[:2] == ["model.conv1.weight", "model.conv1.bias"]


def test_the_keras_runner_on_openfl_keras_mnist_code(tmp_path: Path) -> None:
    workspace = tmp_path / "keras_mnist"
    shutil.copytree(DATA / "keras_mnist", workspace)
    dataloader = load_code(workspace, "src.dataloader")
    taskrunner = load_code(workspace, "src.taskrunner")
    data = dataloader.KerasMNISTInMemory(data_path=1, batch_size=256, collaborator_count=2)
    assert data.y_train.shape == (718, 10)  # one-hot, as OpenFL's keras loader gives them
    runner = taskrunner.KerasCNN(data_loader=dataloader.KerasMNISTInMemory(batch_size=256, collaborator_count=2))
    assert isinstance(runner, TaskRunner) and runner.feature_shape == [28, 28, 1]
    second = taskrunner.KerasCNN(data_loader=data)
    assert list(second.get_weights()) == list(runner.get_weights())  # the same variable names in one process
    out = runner.train(data, epochs=1, metrics=["loss"], batch_size=32)
    assert set(out.metrics) == {"loss"} and out.sample_count == 718
    out = runner.validate(data, metrics=["accuracy"], apply="local", batch_size=32)
    assert set(out.metrics) == {"accuracy"} and out.metrics["accuracy"] > 0.3 and out.sample_count == 180
    with pytest.raises(AccordError, match="no training metric 'acc'"):
        runner.train(data, metrics=["acc"])
    shipped = runner.get_weights(with_optimizer=True)
    second.set_weights(shipped, with_optimizer=True)
    runner.reset_optimizer()
    fresh = runner.get_weights(with_optimizer=True)
    iterations = [k for k in fresh if k.startswith(OPTIMIZER_PREFIX) and k.endswith("iteration")]
    assert iterations and all(fresh[k] == 0 for k in iterations) and all(shipped[k] > 0 for k in iterations)
