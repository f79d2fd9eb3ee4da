"""The strategies the benches compare, by the names and settings the plan selects them with.

Each is ``aggregator.settings.strategy: {template: accord.strategies.<name>, settings: ...}``
(plan/strategy.py builds and type-checks it when the plan loads). One whose template does not
import yet, or whose settings its constructor refuses, is "not available", with why, so a bench
runs whichever strategies exist. A bench script imports this module as
``from _strategies import ...`` (its own folder is on ``sys.path``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from accord.errors import AccordError
from accord.plan.strategy import build_strategy


@dataclass(frozen=True)
class StrategyChoice:
    """A strategy as the plan selects it: ``accord.strategies.<name>`` with ``settings``."""

    label: str
    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: shown beside the row (e.g. why a setting differs from the catalog's)
    note: str = ""

    @property
    def spec(self) -> dict[str, Any]:
        """The plan's ``aggregator.settings.strategy`` mapping."""
        return {"template": f"accord.strategies.{self.name}", "settings": dict(self.settings)}

    def but(self, label: str | None = None, note: str = "", **settings: Any) -> StrategyChoice:
        """This strategy with some settings changed (and a label and note saying so)."""
        return replace(self, label=label or self.label, settings={**self.settings, **settings}, note=note or self.note)

    def unavailable(self) -> str | None:
        """Why this strategy cannot be built now (its template does not import, its settings are
        refused), or None: built exactly as the plan builds it when it loads."""
        with tempfile.TemporaryDirectory() as workspace:
            try:
                build_strategy(self.spec, Path(workspace))
            except AccordError as exc:  # "cannot import 'T' (where): why" says why last
                return f"not available: {exc.message.rsplit('): ', 1)[-1]}"
        return None


#: FedAvg, wrapped by NormClipping
FEDAVG_SPEC = {"template": "accord.strategies.FedAvg"}

#: every strategy of issue 10 with its agreed settings, by class name
CATALOG: dict[str, StrategyChoice] = {
    s.name: s
    for s in (
        StrategyChoice("FedAvg", "FedAvg"),
        StrategyChoice("FedAvgM", "FedAvgM", {"server_lr": 1.0, "momentum": 0.9}),
        StrategyChoice("FedProx", "FedProx", {"proximal_mu": 0.01}),
        StrategyChoice("FedAdam", "FedAdam"),
        StrategyChoice("FedYogi", "FedYogi"),
        StrategyChoice("FedAdagrad", "FedAdagrad"),
        StrategyChoice("SCAFFOLD", "Scaffold", note="the stretch: may not exist"),
        StrategyChoice("CoordinateMedian", "CoordinateMedian"),
        StrategyChoice("TrimmedMean", "TrimmedMean", {"beta": 0.1}),
        StrategyChoice("GeometricMedian", "GeometricMedian"),
        StrategyChoice("Krum", "Krum", {"byzantine": 2}),
        StrategyChoice("MultiKrum", "MultiKrum", {"byzantine": 2, "keep": None}),
        StrategyChoice("Bulyan", "Bulyan", {"byzantine": 1}, "n >= 4f+3: f=1 for 10 sites"),
        StrategyChoice("NormClipping", "NormClipping", {"strategy": FEDAVG_SPEC, "max_norm": 2.0}, "FedAvg, each change clipped"),
    )
}

#: the server optimizers (strategies/fedopt.py), whose server learning rate a bench may set
SERVER_OPTIMIZERS = ("FedAdam", "FedYogi", "FedAdagrad")
#: the name of that setting (eta in Reddi et al. 2021)
SERVER_LR = "eta"
