"""Model state (name -> ndarray), its files on disk and its checks."""

from accord.tensors.state import ModelState, check_update, load_state, save_state

__all__ = ["ModelState", "check_update", "load_state", "save_state"]
