"""TaskInterface decorators, DataInterface, ModelInterface and the interactive runners."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from accord.errors import AccordError
from accord.interactive import DataInterface, ModelInterface, TaskInterface
from accord.interactive.data import creation_kwargs, site_data
from accord.interactive.runner import UserTask, metrics_of


def train(net, loader, opt, dev, epochs=1, lr=0.1):
    return {"epochs": epochs, "lr": lr}


def validate(net, loader):
    return {"accuracy": 1.0}


# --------------------------------------------------------------------------- decorators


def test_register_maps_objects_and_infers_kind_from_the_optimizer() -> None:
    ti = TaskInterface()
    assert ti.register_fl_task(model="net", data_loader="loader", device="dev", optimizer="opt")(train) is train
    ti.register_fl_task(model="net", data_loader="loader")(validate)
    tasks = ti.tasks
    assert tasks["train"].kind == "train" and tasks["validate"].kind == "validate"
    assert tasks["train"].params == {"model": "net", "data_loader": "loader", "device": "dev", "optimizer": "opt"}
    assert ti.task("train").function is train and ti.task("validate").function is validate


def test_kind_can_be_said_for_a_training_function_without_optimizer() -> None:
    ti = TaskInterface()
    ti.register_fl_task(model="net", data_loader="loader", kind="train")(validate)
    assert ti.task("train").name == "validate"
    with pytest.raises(AccordError, match="kind 'fit' is not one of"):
        ti.register_fl_task(model="net", data_loader="loader", kind="fit")


def test_add_kwargs_in_either_order_and_as_plain_values() -> None:
    ti = TaskInterface()
    ti.add_kwargs(lr=0.5)(ti.register_fl_task(model="net", data_loader="loader", device="dev", optimizer="opt")(train))
    first = ti.tasks["train"].kwargs
    ti2 = TaskInterface()
    ti2.register_fl_task(model="net", data_loader="loader", device="dev", optimizer="opt")(ti2.add_kwargs(lr=0.5, epochs=(1, 2))(train))
    assert first == {"lr": 0.5} and ti2.tasks["train"].kwargs == {"lr": 0.5, "epochs": [1, 2]}


@pytest.mark.parametrize(
    "decorate, message",
    [
        (lambda ti: ti.register_fl_task(model="network", data_loader="loader")(validate), "validate\\(\\) has no parameter 'network'"),
        (lambda ti: ti.add_kwargs(momentum=0.9)(train), "train\\(\\) has no parameter 'momentum'"),
        (lambda ti: ti.add_kwargs(lr=np.float32(0.1))(train), "is not a plain value"),
        (lambda ti: ti.add_kwargs(apply="local")(train), "reserved"),
        (lambda ti: ti.register_fl_task(model="net", data_loader="net")(validate), "must be distinct"),
    ],
)
def test_decorator_mistakes_are_refused_at_once(decorate: Any, message: str) -> None:
    with pytest.raises(AccordError, match=message):
        decorate(TaskInterface())


def test_incomplete_or_ambiguous_registrations_are_refused() -> None:
    ti = TaskInterface()
    ti.register_fl_task(model="net", data_loader="loader", optimizer="opt")(train)  # nothing gives dev
    with pytest.raises(AccordError, match=r"train\(\) needs \['dev'\]"):
        _ = ti.tasks
    ti = TaskInterface()
    ti.register_fl_task(model="net", data_loader="loader")(validate)
    with pytest.raises(AccordError, match="0 train tasks"):
        ti.task("train")
    ti.register_fl_task(model="m", data_loader="loader")(lambda m, loader: {})
    with pytest.raises(AccordError, match="2 validate tasks"):
        ti.task("validate")


def test_a_redefined_function_replaces_the_registered_one() -> None:
    ti = TaskInterface()
    ti.register_fl_task(model="net", data_loader="loader")(validate)

    def validate_again(net, loader):  # a notebook cell run again defines a new function object
        return {}

    validate_again.__name__ = "validate"
    ti.register_fl_task(model="net", data_loader="loader")(validate_again)
    assert ti.task("validate").function is validate_again


# --------------------------------------------------------------------------- calling tasks


def test_user_task_gets_runner_objects_and_only_the_kwargs_it_takes() -> None:
    task = UserTask.from_setting({"function": train, "params": {"model": "net", "data_loader": "loader", "device": "dev", "optimizer": "opt"}}, "t")
    objects = {"model": 1, "data_loader": 2, "device": "cpu", "optimizer": 3}
    assert task(objects, {"epochs": 3, "unknown": 1}) == {"epochs": 3.0, "lr": 0.1}
    every = UserTask.from_setting({"function": lambda **kw: {"n": len(kw)}, "params": {"model": "m"}}, "t")
    assert every(objects, {"epochs": 1, "other": 2}) == {"n": 3.0}
    with pytest.raises(AccordError, match=r"params names \['loss'\]"):
        UserTask.from_setting({"function": train, "params": {"loss": "x"}}, "t")


def test_metrics_must_be_a_dict_of_numbers() -> None:
    assert metrics_of({"a": np.float32(0.5), "b": 2}, "f") == {"a": 0.5, "b": 2.0}
    with pytest.raises(AccordError, match="returned a list"):
        metrics_of([0.5], "f")
    with pytest.raises(AccordError, match="metric 'a' is 'high', not a number"):
        metrics_of({"a": "high"}, "f")


# --------------------------------------------------------------------------- data


class Shard(DataInterface):
    def __init__(self, data_path=None, batch_size=32, scale=1.0):
        super().__init__(data_path)
        self.batch_size, self.scale = batch_size, scale

    def get_train_loader(self):
        return self.data_path


class Plain(DataInterface):
    def get_train_loader(self):
        return self.kwargs


def test_creation_kwargs_are_recorded_without_the_data_path() -> None:
    assert creation_kwargs(Shard("local.npz", 16)) == {"batch_size": 16}
    assert creation_kwargs(Shard(scale=2.0)) == {"scale": 2.0}
    assert creation_kwargs(Plain(batch_size=8, shuffle=True)) == {"batch_size": 8, "shuffle": True}


SHARD_MODULE = """from accord.interactive import DataInterface


class Shard(DataInterface):
    def __init__(self, data_path=None, batch_size=32):
        super().__init__(data_path)
        self.batch_size = batch_size

    def get_train_loader(self):
        return self.data_path


class NotData:
    def __init__(self, data_path=None):
        pass
"""


def test_site_data_builds_the_workspaces_interface_with_the_sites_path(tmp_path) -> None:
    import sys

    from accord.plan.objects import use_workspace

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "__init__.py").write_text("")
    (tmp_path / "src" / "shard.py").write_text(SHARD_MODULE)
    try:
        use_workspace(tmp_path)
        data = site_data("/data/site1.npz", "src.shard.Shard", {"batch_size": 4})
        assert type(data).__name__ == "Shard" and data.get_train_loader() == "/data/site1.npz" and data.batch_size == 4
        with pytest.raises(AccordError, match="is not a DataInterface subclass"):
            site_data("x", "src.shard.NotData")
    finally:
        for name in [n for n in sys.modules if n == "src" or n.startswith("src.")]:
            del sys.modules[name]
    with pytest.raises(AccordError, match=r"data_loader.settings.interface is .*Shard', which is not allowed"):
        site_data("x", f"{__name__}.Shard")  # code outside the workspace's src is never imported


def test_an_interface_without_a_data_path_is_refused() -> None:
    class NoPath(DataInterface):
        def __init__(self, batch_size=32):
            super().__init__(None)

    with pytest.raises(AccordError, match="does not accept data_path"):
        creation_kwargs(NoPath())
    with pytest.raises(AccordError, match="not a DataInterface"):
        creation_kwargs(object())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- models and runners


def test_model_interface_checks_its_builders() -> None:
    build = lambda: None  # noqa: E731
    assert ModelInterface(build, optimizer=build).runner_template.endswith("TorchInteractiveRunner")
    with pytest.raises(AccordError, match="needs optimizer="):
        ModelInterface(build)
    with pytest.raises(AccordError, match="carries its optimizer"):
        ModelInterface(build, optimizer=build, framework="keras")
    with pytest.raises(AccordError, match="framework 'jax'"):
        ModelInterface(build, optimizer=build, framework="jax")
    with pytest.raises(AccordError, match="not a function"):
        ModelInterface(object(), optimizer=build)  # type: ignore[arg-type]


class Arrays(DataInterface):
    """Digits-like random data: 64 features, 10 classes."""

    def __init__(self, data_path=None, n=40):
        super().__init__(data_path, n=n)
        rng = np.random.default_rng(0)
        self.x, self.y = rng.random((n, 64), dtype=np.float32), rng.integers(0, 10, n)

    def get_train_loader(self):
        return self.x, self.y

    def get_valid_loader(self):
        return self.x, self.y

    def get_train_data_size(self):
        return len(self.y)

    def get_valid_data_size(self):
        return len(self.y) // 2


def torch_train(model, data, optimizer, device, epochs=1):
    import torch

    x, y = (torch.tensor(a).to(device) for a in data)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return {"loss": loss}


def torch_validate(model, data):
    import torch

    x, y = (torch.tensor(a) for a in data)
    return {"accuracy": float((model(x).argmax(1) == y).float().mean())}


def test_torch_runner_calls_the_functions_and_moves_weights_by_name() -> None:
    import torch

    from accord.interactive.torch_runner import TorchInteractiveRunner

    def make() -> TorchInteractiveRunner:
        return TorchInteractiveRunner(
            model=lambda: torch.nn.Sequential(torch.nn.Linear(64, 10)),
            optimizer=lambda params: torch.optim.Adam(params, lr=0.05),
            functions={
                "train": {"function": torch_train, "params": {"model": "model", "data_loader": "data", "optimizer": "optimizer", "device": "device"}},
                "validate": {"function": torch_validate, "params": {"model": "model", "data_loader": "data"}},
            },
            seed=1,
        )

    runner, other = make(), make()
    initial = runner.get_weights(with_optimizer=True)
    assert sorted(initial) == ["0.bias", "0.weight", "__opt__.0.bias.exp_avg", "__opt__.0.bias.exp_avg_sq", "__opt__.0.bias.step",
                               "__opt__.0.weight.exp_avg", "__opt__.0.weight.exp_avg_sq", "__opt__.0.weight.step"]
    data = Arrays()
    out = runner.train(data, epochs=5, apply_unknown=1)
    assert out.sample_count == 40 and set(out.metrics) == {"loss"}
    assert runner.validate(data).sample_count == 20
    trained = runner.get_weights(with_optimizer=True)
    assert float(trained["__opt__.0.weight.step"]) == 5.0
    other.set_weights(trained, with_optimizer=True)
    assert all(np.array_equal(v, other.get_weights(with_optimizer=True)[k]) for k, v in trained.items())
    runner.reset_optimizer()
    assert float(runner.get_weights(with_optimizer=True)["__opt__.0.weight.step"]) == 0.0
    with pytest.raises(AccordError, match=r"not a torch.optim.Optimizer"):
        TorchInteractiveRunner(
            lambda: torch.nn.Linear(2, 2), lambda params: "sgd", {"train": {"function": torch_train}, "validate": {"function": torch_validate}}
        )
    with pytest.raises(AccordError, match="must name exactly"):
        TorchInteractiveRunner(lambda: torch.nn.Linear(2, 2), lambda params: torch.optim.SGD(params, lr=0.1), {"train": {"function": torch_train}})
    with pytest.raises(AccordError, match="not a DataInterface"):
        runner.train(object())
    named = {"function": f"{__name__}.torch_validate"}  # a path outside the workspace's src
    with pytest.raises(AccordError, match=r"task_runner.settings.functions.validate.function is .* which is not allowed"):
        TorchInteractiveRunner(lambda: torch.nn.Linear(2, 2), "torch.optim.SGD", {"train": {"function": torch_train}, "validate": named})


def keras_model():
    import keras

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    return model


def keras_train(model, data, epochs=1):
    history = model.fit(*data, epochs=epochs, verbose=0)
    return {"loss": history.history["loss"][-1]}


def keras_validate(model, data):
    return {"accuracy": float(np.mean(model.predict(data[0], verbose=0).argmax(1) == data[1]))}


def test_keras_runner_calls_the_functions_and_carries_the_compiled_optimizer() -> None:
    import keras

    from accord.interactive.keras_runner import KerasInteractiveRunner

    def make() -> KerasInteractiveRunner:
        return KerasInteractiveRunner(
            keras_model,
            {
                "train": {"function": keras_train, "params": {"model": "model", "data_loader": "data"}},
                "validate": {"function": keras_validate, "params": {"model": "model", "data_loader": "data"}},
            },
            seed=2,
        )

    runner, other = make(), make()
    assert list(runner.get_weights()) == list(other.get_weights())  # same names on every site
    out = runner.train(Arrays(), epochs=2)
    assert out.sample_count == 40 and out.metrics["loss"] > 0
    assert set(runner.validate(Arrays()).metrics) == {"accuracy"}
    trained = runner.get_weights(with_optimizer=True)
    assert any(name.startswith("__opt__.") for name in trained)
    other.set_weights(trained, with_optimizer=True)
    assert all(np.array_equal(v, other.get_weights(with_optimizer=True)[k]) for k, v in trained.items())
    with pytest.raises(AccordError, match="not compiled"):
        KerasInteractiveRunner(lambda: keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), {})
    with_device = {"function": keras_validate, "params": {"model": "model", "data_loader": "data", "device": "data"}}
    with pytest.raises(AccordError, match="map device, but this framework places the model itself"):
        KerasInteractiveRunner(keras_model, {"train": {"function": keras_train}, "validate": with_device})
