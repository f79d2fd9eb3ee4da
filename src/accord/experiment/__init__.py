"""Python-level ways to run a federation: the local multi-process federation (quickstart)."""
