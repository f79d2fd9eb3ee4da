"""The FL plan: schema, loading with defaults, overrides, hashing, object construction."""

from accord.plan.loader import Plan, load_plan, parse_overrides

__all__ = ["Plan", "load_plan", "parse_overrides"]
