"""What travels in secure aggregation's phases (strategies/secure.py at the aggregator,
collaborator/secure_site.py at a site): the phase names, the payload formats and the
flattening of a model's update into the vector the SecAgg+ library masks.

Aggregator to site (``TaskAssignment.payload``): in ``advertise`` the round's seed and cohort;
in ``share`` the roster (site -> advert); in ``mask`` the sealed shares routed to the site
(sender -> share); in ``unmask`` the survivors and the dropped. Site to aggregator
(``TaskResult.payload``): its advert, its sealed shares (neighbour -> share), its reveals
(owner -> reveal); in ``mask`` its masked update travels as one uint64 tensor, MASKED, in
chunks like any update, and in ``unmask``, beside the reveals, its correction (its pairwise masks
with the sites the request names dropped, summed: model-sized, so a tensor too, CORRECTION). A signed round (the deployment: SIGNED_PHASES) adds ``confirm``
between ``mask`` and ``unmask``: the aggregator sends the survivors and the dropped, the site
replies its confirmation (its signature on them); the ``unmask`` request then also carries
the survivors' confirmations (site -> confirmation). Every payload is a SecAgg map (accord.secagg.messages: length-prefixed,
bounded, parsed strictly; never pickled); those naming O(n k) entries a round (the roster,
shares, reveals: ``encode_entries``) are indexed maps over the round's cohort, sorted, which
both ends hold from ``advertise`` on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from accord.errors import RefusedError
from accord.secagg.messages import decode_indexed, decode_map, encode_indexed, encode_map

ADVERTISE, SHARE, MASK, CONFIRM, UNMASK = "advertise", "share", "mask", "confirm", "unmask"
#: secure aggregation's phases, in order; the round's tasks (train, validations) are owed in MASK
PHASES = (ADVERTISE, SHARE, MASK, UNMASK)
#: a signed round's phases: the consistency check (CONFIRM) before the reveals
SIGNED_PHASES = (ADVERTISE, SHARE, MASK, CONFIRM, UNMASK)
#: the phases whose reply is a payload only (MASK runs the tasks)
REPLY_PHASES = (ADVERTISE, SHARE, CONFIRM, UNMASK)
#: the name of the masked update's tensor: the ring's uint64 elements (the update's float
#: values, then the weight) travel and are staged as int64, the same bits (safetensors has no U64)
MASKED = "secagg.masked"
MASKED_DTYPE = "int64"
#: the name of a survivor's correction in its ``unmask`` reply: ring elements as MASKED's
CORRECTION = "secagg.correction"
SEED_BYTES = 32
#: the most sites a payload names (a cohort larger than this is refused by the site)
MAX_SITES = 100_000


def float_names(model: Mapping[str, np.ndarray]) -> list[str]:
    """The model's floating-point tensors, in the order their changes are masked (the others
    are not aggregated under secure aggregation: the global model's values are kept)."""
    return sorted(name for name, tensor in model.items() if np.asarray(tensor).dtype.kind == "f")


def update_length(model: Mapping[str, np.ndarray]) -> int:
    """How many values the masked vector's update holds (the weight comes after them)."""
    return sum(int(np.asarray(model[name]).size) for name in float_names(model))


def flatten_change(update: Mapping[str, np.ndarray], global_model: Mapping[str, np.ndarray], is_delta: bool) -> np.ndarray:
    """The change (update - global, or the delta itself) of the float tensors, as one float64 vector."""
    parts = []
    for name in float_names(global_model):
        value = np.asarray(update[name], dtype=np.float64).ravel()
        parts.append(value if is_delta else value - np.asarray(global_model[name], dtype=np.float64).ravel())
    return np.concatenate(parts) if parts else np.zeros(0)


def apply_mean_change(global_model: Mapping[str, np.ndarray], change: np.ndarray) -> dict[str, np.ndarray]:
    """The global model plus the mean ``change`` (float tensors; the others as they were)."""
    model = {name: np.asarray(tensor) for name, tensor in global_model.items()}
    at = 0
    for name in float_names(global_model):
        tensor = model[name]
        piece = change[at : at + tensor.size].reshape(tensor.shape)
        model[name] = (tensor.astype(np.float64) + piece).astype(tensor.dtype)
        at += tensor.size
    return model


def _names_blob(names: Sequence[str]) -> bytes:
    return encode_map({name: b"" for name in names})


def _names(blob: bytes, what: str) -> list[str]:
    return list(decode_map(blob, what, max_entries=MAX_SITES, max_value=0))


def encode_opening(seed: bytes, cohort: Sequence[str]) -> bytes:
    """The ``advertise`` payload: the round's seed and its cohort."""
    return encode_map({"cohort": _names_blob(cohort), "seed": seed})


def decode_opening(payload: bytes) -> tuple[bytes, list[str]]:
    """(seed, cohort) of an ``advertise`` payload; RefusedError if malformed."""
    parts = _fields(payload, "the advertise payload", ("cohort", "seed"))
    if len(parts["seed"]) != SEED_BYTES:
        raise RefusedError(f"the advertise payload's round seed has {len(parts['seed'])} bytes, not {SEED_BYTES}", kind="payload")
    return parts["seed"], _names(parts["cohort"], "the advertise payload's cohort")


def encode_request(survivors: Sequence[str], dropped: Sequence[str], confirmations: Mapping[str, bytes] | None = None) -> bytes:
    """The ``confirm`` and ``unmask`` payload: who masked (survivors) and who shared but did not
    (dropped); in a signed round's ``unmask``, the survivors' ``confirmations`` too."""
    fields = {"dropped": _names_blob(dropped), "survivors": _names_blob(survivors)}
    if confirmations is not None:
        fields["confirmations"] = encode_map(confirmations)
    return encode_map(fields)


def decode_request(payload: bytes) -> tuple[list[str], list[str], dict[str, bytes] | None]:
    """(survivors, dropped, confirmations or None) of a ``confirm`` or ``unmask`` payload;
    RefusedError if malformed."""
    signed = ("confirmations", "dropped", "survivors")
    parts = _fields(payload, "the unmask payload", signed, ("dropped", "survivors"))
    confirmations = decode_map(parts["confirmations"], "the unmask confirmations", max_entries=MAX_SITES, max_value=4096) if "confirmations" in parts else None
    return _names(parts["survivors"], "the unmask survivors"), _names(parts["dropped"], "the unmask dropped"), confirmations


def encode_entries(entries: Mapping[str, bytes], cohort: Sequence[str]) -> bytes:
    """A site -> message payload (roster, routed shares, a site's shares or reveals) over the
    round's ``cohort`` (sorted: every name of the payload is in it), as an indexed map."""
    return encode_indexed(entries, cohort)


def decode_entries(payload: bytes, cohort: Sequence[str], what: str) -> dict[str, bytes]:
    """A site -> message payload over the sorted ``cohort``, each message at most 4 KiB;
    RefusedError if malformed."""
    return decode_indexed(payload, cohort, what, max_value=4096)


def _fields(payload: bytes, what: str, names: tuple[str, ...], *alternatives: tuple[str, ...]) -> dict[str, bytes]:
    parts = decode_map(payload, what, max_entries=len(names), max_value=len(payload))
    if tuple(sorted(parts)) not in (names, *alternatives):
        raise RefusedError(f"{what} holds {sorted(parts)}, not {list(names)}", kind="payload")
    return parts
