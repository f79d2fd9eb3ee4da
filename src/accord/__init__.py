"""Accord: an open federated learning framework.

``import accord`` needs NumPy alone; gRPC, torch and the rest are imported by the
modules that use them.
"""

__version__ = "0.1.0"

from accord.errors import AccordError

__all__ = ["AccordError", "__version__"]
