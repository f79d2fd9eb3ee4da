"""The settings the file loaders share: class names -> indices (the same at every site), type checks.

A federation's sites must number their classes alike, or one site's "M" trains the output
another site's "B" does. The plan (hashed, the same everywhere) fixes the numbering: the
index of a class is its position in ``data_loader.settings.classes``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from accord.errors import AccordError

_SETTINGS = "data_loader.settings"


def class_index(classes: Sequence[Any] | None) -> dict[str, int] | None:
    """The plan's ``classes`` as ``{name: index}`` (position in the list), or None if not given.

    Names are compared as text (YAML ``[0, 1]`` names the cells ``0`` and ``1``); an empty
    list, a repeated name or a value that is not a string or an integer is refused.
    """
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
        raise AccordError(
            f"{_SETTINGS}.classes is {classes!r:.80}; it must be a non-empty list of class names",
            f"set {_SETTINGS}.classes to e.g. [benign, malignant] (index = position), or null",
        )
    names: dict[str, int] = {}
    for position, value in enumerate(classes):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise AccordError(
                f"{_SETTINGS}.classes[{position}] is {value!r:.80}; a class name is a string or an integer",
                f"write the class names in {_SETTINGS}.classes as they appear in the data",
            )
        name = str(value)
        if name in names:
            raise AccordError(
                f"{_SETTINGS}.classes names {name!r} twice (positions {names[name]} and {position})",
                f"list each class once in {_SETTINGS}.classes",
            )
        names[name] = position
    return names


def check_type(setting: str, value: Any, kind: type | tuple[type, ...], expected: str) -> None:
    """AccordError naming ``data_loader.settings.<setting>`` unless ``value`` is a ``kind`` (never a bool
    where a number is meant)."""
    wants_bool = kind is bool or (isinstance(kind, tuple) and bool in kind)
    if not isinstance(value, kind) or (isinstance(value, bool) and not wants_bool):
        raise AccordError(
            f"{_SETTINGS}.{setting} is {value!r:.80}; it must be {expected}",
            f"set {_SETTINGS}.{setting} in the plan to {expected}",
        )


def check_seed(value: Any) -> int:
    """``data_loader.settings.seed`` as an integer >= 0 (NumPy's generators take no negative seed)."""
    check_type("seed", value, int, "an integer >= 0")
    if value < 0:
        raise AccordError(f"{_SETTINGS}.seed is {value}; it must be an integer >= 0", f"set {_SETTINGS}.seed in the plan to e.g. 0")
    return int(value)


def check_names(setting: str, value: Any) -> list[str] | None:
    """``value`` as a list of distinct strings (None stays None), else AccordError naming the setting."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise AccordError(
            f"{_SETTINGS}.{setting} is {value!r:.80}; it must be a list of names or null",
            f"set {_SETTINGS}.{setting} in the plan to e.g. [a, b] or null",
        )
    repeated = sorted(name for name, count in Counter(value).items() if count > 1)
    if repeated:
        raise AccordError(f"{_SETTINGS}.{setting} names {repeated[0]!r} twice", f"list each name once in {_SETTINGS}.{setting}")
    return list(value)
