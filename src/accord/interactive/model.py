"""ModelInterface: how to build the model (and its optimizer), and in which framework.

Builders, not instances: every site builds its own model from the same code with the
plan's seed, and the initial global model is written from the same builder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from accord.errors import AccordError

FRAMEWORKS = ("torch", "keras")
#: the plan's task_runner.template for each framework.
RUNNERS = {
    "torch": "accord.interactive.torch_runner.TorchInteractiveRunner",
    "keras": "accord.interactive.keras_runner.KerasInteractiveRunner",
}


class ModelInterface:
    """``model()`` builds a new model; ``optimizer(params)`` a new optimizer over its parameters.

    torch: ``model`` returns an ``nn.Module`` and ``optimizer`` (required) takes
    ``model.parameters()`` and returns a ``torch.optim.Optimizer``. keras: ``model`` returns a
    compiled ``keras.Model``, which carries its optimizer, so ``optimizer`` is left out.
    """

    def __init__(
        self,
        model: Callable[[], Any],
        optimizer: Callable[[Any], Any] | None = None,
        framework: str = "torch",
    ) -> None:
        if framework not in FRAMEWORKS:
            raise AccordError(f"framework {framework!r} is not one of {FRAMEWORKS}", "use 'torch' or 'keras'")
        if not callable(model):
            raise AccordError(
                f"model is a {type(model).__name__}, not a function",
                "pass a function that builds a new model (every site builds its own)",
            )
        if framework == "torch" and not callable(optimizer):
            raise AccordError(
                "a torch ModelInterface needs optimizer=<function taking the model's parameters>",
                "pass e.g. optimizer=build_optimizer with def build_optimizer(params): return torch.optim.Adam(params)",
            )
        if framework == "keras" and optimizer is not None:
            raise AccordError(
                "a Keras model carries its optimizer; ModelInterface(framework='keras') takes none",
                "compile the model with its optimizer inside the model builder and leave out optimizer=",
            )
        self.model = model
        self.optimizer = optimizer
        self.framework = framework

    @property
    def runner_template(self) -> str:
        """The plan's task_runner.template for this framework."""
        return RUNNERS[self.framework]

    def builders(self) -> list[Callable[..., Any]]:
        """The functions whose source the sites need."""
        return [self.model] + ([self.optimizer] if self.optimizer is not None else [])
