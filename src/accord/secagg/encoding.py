"""Fixed-point encoding of a weighted update into Z_{2^64}, and decoding of the sum.

A site of weight w sends round(w * clip(x) * 2^f) per value (two's complement in uint64)
followed by w itself, so the masked sum carries sum(w * x) and sum(w). The rounding error is at
most 1/2 per value and site, i.e. |error of the weighted sum| <= cohort / 2^(f+1).
"""

from __future__ import annotations

import numpy as np

from accord.secagg.messages import SecAggRefused
from accord.secagg.params import SecAggParams


def encode(params: SecAggParams, update: np.ndarray, weight: int, length: int) -> np.ndarray:
    """The ring elements (uint64, ``length`` + 1) of ``weight`` * clipped ``update``, then ``weight``."""
    if isinstance(weight, bool) or not isinstance(weight, int | np.integer) or not 1 <= int(weight) <= params.max_weight:
        raise SecAggRefused(
            f"the update's weight is {weight!r}; it must be an integer in [1, {params.max_weight}]",
            "pass the site's sample count, at most the plan's max_weight",
        )
    values = np.asarray(update)
    if values.dtype.kind not in "fiu" or values.size != length:
        raise SecAggRefused(
            f"the update has {values.size} {values.dtype} values; this round masks {length} numbers",
            "pass the flattened model update of this round's model",
        )
    values = values.reshape(-1).astype(np.float64, copy=False)
    if not np.isfinite(values).all():
        raise SecAggRefused("the update holds NaN or infinite values", "fix the training step; secure aggregation cannot mask them")
    out = np.empty(length + 1, dtype=np.uint64)
    scaled = np.clip(values, -params.clip, params.clip)
    scaled *= float(weight) * params.scale
    out[:length] = np.rint(scaled).astype(np.int64).view(np.uint64)
    out[length] = np.uint64(int(weight))
    return out


def decode(params: SecAggParams, total: np.ndarray) -> tuple[np.ndarray, float]:
    """(weighted sum as float64, total weight) of an unmasked ring sum."""
    signed = total.view(np.int64)
    return signed[:-1].astype(np.float64) / params.scale, float(signed[-1])
