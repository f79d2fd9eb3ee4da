"""FederatedModel: a model builder (or runner factory) turned into one TaskRunner per site.

The framework is picked from what the builder returns: a ``torch.nn.Module`` gets a
TorchTaskRunner, a ``keras.Model`` a KerasTaskRunner. Any other framework comes in as
``runner=``, a function returning a TaskRunner (e.g. a SklearnLinearRunner). Frameworks are
imported only when the builder's result asks for them. OpenFL's idioms are taken too
(native/idioms.py): ``build_model(feature_shape, num_classes)``, ``loss_fn=``, an optimizer
function of the parameters, one-hot labels, ``save_native(path)``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accord.data.base import DataLoader
from accord.errors import AccordError
from accord.export.consensus import is_keras_model, is_torch_module
from accord.export.framework_files import KERAS_SUFFIXES, write_keras, write_torch
from accord.native.idioms import builder_arguments, check_optimizer, keras_one_hot_loss, torch_loss
from accord.runners.base import TaskRunner

ModelBuilder = Callable[..., Any]
RunnerFactory = Callable[[], TaskRunner]


class FederatedModel:
    """A model, its optimizer and loss, and the data it trains on (the whole set, or a shard).

    Every runner is built afresh by the same builder with the same ``seed``, so every
    collaborator (and the aggregator's initial model) starts from identical weights.
    ``runner_kwargs`` go to the runner (e.g. ``device``, ``num_threads`` for torch).
    ``build_model`` takes no arguments, or ``(feature_shape, num_classes)`` of ``data_loader``;
    ``optimizer`` is a settings dict or (torch) a function of the parameters; ``loss_fn`` is
    OpenFL's name for ``loss``.
    """

    def __init__(
        self,
        build_model: ModelBuilder | None = None,
        optimizer: Any = None,
        loss: Any = None,
        data_loader: DataLoader | None = None,
        *,
        loss_fn: Any = None,
        runner: RunnerFactory | None = None,
        seed: int = 0,
        **runner_kwargs: Any,
    ) -> None:
        if (build_model is None) == (runner is None):
            raise AccordError(
                "FederatedModel needs exactly one of build_model and runner",
                "pass a function that builds the model, or runner=<function returning a TaskRunner>",
            )
        if build_model is not None and not callable(build_model):
            raise AccordError(
                f"build_model is a {type(build_model).__name__}, not a function",
                "pass a function that builds a new model on each call (every site needs its own)",
            )
        if loss is not None and loss_fn is not None:
            raise AccordError("FederatedModel got both loss and loss_fn", "pass one of them (loss_fn is OpenFL's name for loss)")
        check_optimizer(optimizer)
        self.build_model = build_model
        self.optimizer = optimizer
        self.loss = loss if loss_fn is None else loss_fn
        self.data_loader = data_loader
        self.source_data = data_loader  # shards keep it: the final model validates on all data
        self.runner_factory = runner
        self.seed = int(seed)
        self.runner_kwargs = runner_kwargs
        self.runner: TaskRunner = self._make_runner()
        from accord.native import experiment  # setup() without a model uses the latest one

        experiment.SESSION.last_model = self

    @property
    def model(self) -> Any:
        """The framework's model object (nn.Module, keras.Model, estimator) of this runner."""
        return getattr(self.runner, "model", self.runner)

    def setup(
        self, num_collaborators: int, partition: str = "iid", alpha: float = 0.5, seed: int = 0
    ) -> list[FederatedModel]:
        """One FederatedModel per collaborator, each on its shard of ``data_loader``."""
        split = getattr(self.data_loader, "split", None)
        if split is None:
            raise AccordError(
                "this FederatedModel has no FederatedDataSet to split",
                "pass data_loader=FederatedDataSet(...) when creating it",
            )
        return [self.with_data(shard) for shard in split(num_collaborators, partition, alpha, seed)]

    def with_data(self, data_loader: DataLoader | None) -> FederatedModel:
        """The same model specification with a fresh runner, on ``data_loader``."""
        shard = copy.copy(self)
        shard.data_loader = data_loader
        shard.runner = shard._make_runner()
        return shard

    def save_native(self, path: str | Path) -> Path:
        """The model in its framework's own format, without optimizer state (see save_native)."""
        return save_native(self.model, path)

    def validate(self) -> dict[str, float]:
        """The runner's validation metrics on this model's data."""
        if self.data_loader is None:
            raise AccordError("this FederatedModel has no data", "pass data_loader=... or use with_data()")
        return dict(self.runner.validate(self.data_loader).metrics)

    def _make_runner(self) -> TaskRunner:
        if self.runner_factory is not None:
            runner = self.runner_factory()
            if not isinstance(runner, TaskRunner):
                raise AccordError(
                    f"runner= returned a {type(runner).__name__}, not a TaskRunner",
                    "return an object with get_weights, set_weights, reset_optimizer, train, validate",
                )
            return runner
        assert self.build_model is not None
        _seed_loaded_frameworks(self.seed)
        model = self._build()
        kwargs: dict[str, Any] = {"optimizer": self.optimizer, "seed": self.seed, **self.runner_kwargs}
        one_hot = bool(getattr(self.data_loader, "one_hot", False))
        classes = int(getattr(self.data_loader, "num_classes", 0))
        if is_torch_module(model):
            from accord.runners.torch_runner import TorchTaskRunner

            loss = torch_loss(self.loss or "cross_entropy", one_hot, classes)
            return TorchTaskRunner(model, loss=loss, **kwargs)
        if is_keras_model(model):
            from accord.runners.keras_runner import KerasTaskRunner

            if callable(self.optimizer):
                raise AccordError(
                    "optimizer= a function of the parameters is torch's idiom, not Keras's",
                    "compile the Keras model with its optimizer in build_model, or pass a settings dict",
                )
            keras_runner = KerasTaskRunner(model, loss=self.loss, **kwargs)
            if one_hot:
                keras_one_hot_loss(keras_runner.keras, keras_runner.model, classes)
            return keras_runner
        raise AccordError(
            f"build_model returned a {type(model).__name__}, which is neither a torch.nn.Module "
            "nor a keras.Model",
            "for another framework pass runner=<function returning a TaskRunner> (see docs/runners.md)",
        )


    def _build(self) -> Any:
        """Call the builder; with Keras loaded, with automatic names counted from zero.

        Keras numbers layers and optimizers per process, so each collaborator's copy would
        otherwise get other variable names than the first and weights would not match.
        """
        assert self.build_model is not None
        arguments = builder_arguments(self.build_model, self.data_loader)
        if "keras" not in sys.modules:
            return self.build_model(*arguments)
        from accord.runners._keras_parts import fresh_names

        with fresh_names():
            return self.build_model(*arguments)


def _seed_loaded_frameworks(seed: int) -> None:
    """Seed torch / keras (if the caller loaded them) so every build gives the same weights."""
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "utils"):
        keras.utils.set_random_seed(seed)


def save_native(model: Any, path: str | Path) -> Path:
    """``model`` in its framework's own format, without optimizer state; returns the file.

    torch: the state_dict at ``path`` (read back with ``torch.load(path, weights_only=True)``);
    Keras: a ``.keras`` file (``.keras`` added unless ``path`` ends in it or ``.weights.h5``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_torch_module(model):
        return write_torch(model, target)[0]
    if is_keras_model(model):
        if not target.name.endswith(KERAS_SUFFIXES):
            target = target.with_name(target.name + ".keras")
        return write_keras(model, target)[0]
    raise AccordError(
        f"save_native writes torch and Keras models, not a {type(model).__name__}",
        "save its weights with accord.tensors.state.save_state(path, fl_model.runner.get_weights())",
    )
