"""The collaborator: fetch the global model, run the round's tasks locally, send results."""

from accord.collaborator.collaborator import Collaborator

__all__ = ["Collaborator"]
