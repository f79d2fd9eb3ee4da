"""Noise seeds in a shared plan: refused unless a test says so (whoever has the plan could redraw
the noise and remove it)."""

from __future__ import annotations

import logging

from accord.errors import AccordError

log = logging.getLogger("accord.mods")


def check_seed(mod: str, where: str, seed: int | None, seed_for_tests_only: bool, key: str = "seed") -> None:
    """Refuse a planned noise seed (``where``.``key``) without ``seed_for_tests_only`` (the plan
    is shared: whoever has it, the aggregator included, can redraw the noise and remove it);
    warn with it."""
    if seed is None:
        return
    if not seed_for_tests_only:
        raise AccordError(
            f"{mod} has a seed in the plan: everyone with the plan (the aggregator included) could redraw "
            "this site's noise and subtract it, so the noise would protect nothing",
            f"remove {where}.{key} (fresh noise each time), or, in a test only, also set {where}.seed_for_tests_only: true",
        )
    log.warning("%s: the noise is seeded from the plan (seed_for_tests_only): it protects nothing; tests only", mod)
