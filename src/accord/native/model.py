"""FederatedModel: a model builder (or runner factory) turned into one TaskRunner per site.

The framework is picked from what the builder returns: a ``torch.nn.Module`` gets a
TorchTaskRunner, a ``keras.Model`` a KerasTaskRunner. Any other framework comes in as
``runner=``, a function returning a TaskRunner (e.g. a SklearnLinearRunner). Frameworks are
imported only when the builder's result asks for them.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

from accord.data.base import DataLoader
from accord.errors import AccordError
from accord.runners.base import TaskRunner

ModelBuilder = Callable[[], Any]
RunnerFactory = Callable[[], TaskRunner]


class FederatedModel:
    """A model, its optimizer and loss, and the data it trains on (the whole set, or a shard).

    Every runner is built afresh by the same builder with the same ``seed``, so every
    collaborator (and the aggregator's initial model) starts from identical weights.
    ``runner_kwargs`` go to the runner (e.g. ``device``, ``num_threads`` for torch).
    """

    def __init__(
        self,
        build_model: ModelBuilder | None = None,
        optimizer: Any = None,
        loss: Any = None,
        data_loader: DataLoader | None = None,
        *,
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
        self.build_model = build_model
        self.optimizer = optimizer
        self.loss = loss
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
        if _is_instance(model, "torch", "nn.Module"):
            from accord.runners.torch_runner import TorchTaskRunner

            return TorchTaskRunner(model, loss=self.loss or "cross_entropy", **kwargs)
        if _is_instance(model, "keras", "Model"):
            from accord.runners.keras_runner import KerasTaskRunner

            return KerasTaskRunner(model, loss=self.loss, **kwargs)
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
        if "keras" not in sys.modules:
            return self.build_model()
        from accord.runners._keras_parts import fresh_names

        with fresh_names():
            return self.build_model()


def _is_instance(obj: Any, module: str, dotted_class: str) -> bool:
    """isinstance against ``module.dotted_class`` without importing ``module`` if not loaded."""
    target: Any = sys.modules.get(module)
    for part in dotted_class.split("."):
        target = getattr(target, part, None)
    return isinstance(target, type) and isinstance(obj, target)


def _seed_loaded_frameworks(seed: int) -> None:
    """Seed torch / keras (if the caller loaded them) so every build gives the same weights."""
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "utils"):
        keras.utils.set_random_seed(seed)
