"""Framework adapters: the TaskRunner protocol and its torch implementation."""

from accord.runners.base import TaskOutput, TaskRunner

__all__ = ["TaskOutput", "TaskRunner"]
