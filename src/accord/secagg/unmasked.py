"""The checks of an unmasked SecAgg+ sum (ServerSession.result): what a lying site could have
made the unmasking rebuild or carry (a mask key other than its advert's, a forged weight,
values outside the clip) is refused here, and the round is held."""

from __future__ import annotations

import numpy as np

from accord.secagg import crypto
from accord.secagg.messages import SecAggRefused
from accord.secagg.params import SecAggParams


def check_mask_key(owner: str, seed: bytes, s_pk: bytes) -> None:
    """A dropped ``owner``'s mask key from its rebuilt ``seed`` must match its advert's ``s_pk``
    (it can differ only if ``owner`` dealt shares of no one polynomial under its commitments)."""
    s_sk = crypto.mask_key_from_seed(seed)
    if crypto.public_bytes(s_sk) != s_pk:
        raise SecAggRefused(
            f"the revealed shares of {owner!r}'s mask-key seed rebuild a key other than its advert's: {owner!r} dealt "
            "inconsistent shares",
            "the round is held and run again; look into that site",
            kind="state",
        )


def check_weight(total: np.ndarray, declared: int) -> None:
    """The unmasked total weight (``total``'s last element) must be the survivors' ``declared`` sum."""
    if int(total[-1]) != declared:
        raise SecAggRefused(
            f"the unmasked total weight {int(total.view(np.int64)[-1])} is not the survivors' declared sample counts' "
            f"sum {declared}: a site sent a forged weight or dealt inconsistent shares",
            "the round is held (the global model unchanged) and the next one runs; look for the lying site in the log",
            kind="state",
        )


def check_clip(params: SecAggParams, weighted_sum: np.ndarray, weight: float, survivors: int) -> None:
    """Every value of the weighted mean must lie within ``params.clip`` (plus the rounding bound)."""
    bound = weight * params.clip + survivors / 2 ** (params.fraction_bits + 1)
    worst = float(np.abs(weighted_sum).max(initial=0.0))
    if not weight >= 1 or not worst <= bound:
        raise SecAggRefused(
            f"the unmasked weighted sum has a value of magnitude {worst:.6g}, beyond total weight {weight:g} times clip "
            f"{params.clip:g}: a site sent values outside the clip",
            "the round is held (the global model unchanged) and the next one runs; look for the lying site in the log",
            kind="state",
        )
