"""OpenFL's ``Metric``: what a runner's ``train_`` / ``validate_`` returns, a name and a value."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from accord.errors import AccordError


class Metric(NamedTuple):
    """A metric's name and its value (OpenFL: a NumPy scalar array)."""

    name: str
    value: Any


def metric_values(returned: Any, method: str) -> dict[str, float]:
    """The metrics of what ``method`` returned (a Metric, a list of them, or a dict) as floats.

    A value must be one finite-or-not number (a scalar or a one-element array); anything else
    is an AccordError naming the metric and the method."""
    if isinstance(returned, Metric):
        pairs = [tuple(returned)]
    elif isinstance(returned, dict):
        pairs = list(returned.items())
    elif isinstance(returned, list | tuple) and all(isinstance(m, Metric) for m in returned):
        pairs = [tuple(m) for m in returned]
    else:
        raise AccordError(
            f"{method} returned {type(returned).__name__}, not a Metric",
            f"return Metric(name=..., value=np.array(...)) from {method} (openfl.utilities.Metric)",
        )
    values: dict[str, float] = {}
    for name, value in pairs:
        array = np.asarray(value)
        if array.size != 1 or not np.issubdtype(array.dtype, np.number):
            raise AccordError(
                f"{method}'s metric {name!r} is {array.dtype} of shape {array.shape}, not one number",
                f"give Metric {name!r} a scalar value, e.g. np.array(loss)",
            )
        values[str(name)] = float(array.reshape(()))
    return values
