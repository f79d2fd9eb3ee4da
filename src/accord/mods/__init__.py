"""Client mods: the chain wrapping the site's entry point (an instruction in, a reply out),
selectable in the plan (``collaborator.settings.mods``). One mod a file; see docs/plan.md."""

from accord.mods.base import CallNext, Instruction, Mod
from accord.mods.clip_update import ClipUpdate
from accord.mods.gaussian_noise import LocalGaussianNoise
from accord.mods.local_dp import LocalDP

__all__ = ["CallNext", "ClipUpdate", "Instruction", "LocalDP", "LocalGaussianNoise", "Mod"]
