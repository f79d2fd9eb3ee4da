"""The site's entry point: client mods against NumPy references, the chain's order and errors,
and which per-round config a site accepts (its own plan's strategy's keys and types)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from accord.collaborator.accept import Refused, accept
from accord.collaborator.collaborator import Collaborator
from accord.collaborator.executor import SiteFailure, chain, read_only
from accord.errors import AccordError
from accord.messages import Action, FederationInfo, Task, TaskAssignment, TaskResult
from accord.mods import ClipUpdate, Instruction, LocalGaussianNoise, Mod
from accord.runners.base import TaskOutput

RNG = np.random.default_rng(3)
GLOBAL = {
    "w": RNG.standard_normal((4, 3)).astype(np.float32),
    "b": RNG.standard_normal(3).astype(np.float32),
    "steps": np.array(5, np.int64),
    "__opt__.w.exp_avg": np.zeros((4, 3), np.float32),
}
TRAIN = Task("train", "train", {"epochs": 1})


def instruction(task: Task = TRAIN, **changes: Any) -> Instruction:
    fields: dict[str, Any] = dict(
        collaborator="site1", round_number=2, task=task, global_model=read_only(GLOBAL), model_digest="d" * 64
    )
    return Instruction(**{**fields, **changes})


def reply_with(tensors: dict[str, np.ndarray] | None, is_delta: bool = False):
    def call_next(_: Instruction) -> TaskResult:
        return TaskResult("site1", 2, "train", 10, {"loss": 1.0}, tensors=tensors, is_delta=is_delta)

    return call_next


def trained(scale: float) -> dict[str, np.ndarray]:
    """The global model moved by ``scale`` * a fixed direction (and changed optimizer state and counter)."""
    return {
        "w": GLOBAL["w"] + np.float32(scale) * np.ones((4, 3), np.float32),
        "b": GLOBAL["b"] - np.float32(scale) * np.arange(3, dtype=np.float32),
        "steps": np.array(9, np.int64),
        "__opt__.w.exp_avg": np.full((4, 3), 7.0, np.float32),
    }


def norm(update: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(update[n], np.float64) ** 2) for n in ("w", "b"))))


# -- ClipUpdate -------------------------------------------------------------------------------


def test_clip_update_scales_the_weights_change_to_the_bound_as_numpy_does() -> None:
    sent = trained(2.0)
    change = {n: sent[n].astype(np.float64) - GLOBAL[n] for n in ("w", "b")}
    scale = 0.5 / norm(change)
    expected = {n: (GLOBAL[n] + change[n] * scale).astype(np.float32) for n in ("w", "b")}
    got = ClipUpdate(max_norm=0.5)(instruction(), reply_with(sent)).tensors
    assert got is not None
    for name in ("w", "b"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6)
        assert got[name].dtype == np.float32
    assert norm({n: got[n].astype(np.float64) - GLOBAL[n] for n in ("w", "b")}) == pytest.approx(0.5, rel=1e-5)
    assert got["steps"] == 9 and np.all(got["__opt__.w.exp_avg"] == 7.0)  # not floats of the update: as they were


def test_clip_update_scales_a_delta_itself_and_leaves_an_update_within_the_bound_unchanged() -> None:
    delta = {"w": np.full((4, 3), 3.0, np.float32), "b": np.full(3, 4.0, np.float32)}
    got = ClipUpdate(max_norm=1.0)(instruction(), reply_with(delta, is_delta=True)).tensors
    assert got is not None
    np.testing.assert_allclose(got["w"], delta["w"] / norm(delta), rtol=1e-6)
    small = trained(1e-3)
    within = ClipUpdate(max_norm=10.0)(instruction(), reply_with(small)).tensors
    assert within is small  # bit for bit: the very reply


def test_clip_update_and_noise_leave_validation_replies_alone_and_refuse_bad_settings() -> None:
    validation = reply_with(None)
    for mod in (ClipUpdate(1.0), LocalGaussianNoise(1.0, seed=1, seed_for_tests_only=True)):
        assert mod(instruction(Task("v", "validate", {})), validation).tensors is None
    with pytest.raises(AccordError, match=r"max_norm is 0\.0; it must be a finite number > 0"):
        ClipUpdate(0.0)
    with pytest.raises(AccordError, match=r"std is -1\.0"):
        LocalGaussianNoise(-1.0)


# -- LocalGaussianNoise --------------------------------------------------------------------------


def _word(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def test_local_gaussian_noise_adds_the_seeded_draw_of_this_site_round_and_task() -> None:
    sent = trained(0.1)
    got = LocalGaussianNoise(std=0.2, seed=7, seed_for_tests_only=True)(instruction(), reply_with(sent)).tensors
    assert got is not None
    rng = np.random.default_rng([7, 2, _word("site1"), _word("train")])
    for name in ("w", "b"):  # the update tensors, in the reply's order
        change = sent[name].astype(np.float64) - GLOBAL[name]
        expected = (GLOBAL[name] + change + rng.normal(0.0, 0.2, change.shape)).astype(np.float32)
        np.testing.assert_allclose(got[name], expected, rtol=1e-6)
    assert got["steps"] == 9 and np.all(got["__opt__.w.exp_avg"] == 7.0)
    other = LocalGaussianNoise(std=0.2, seed=7, seed_for_tests_only=True)(instruction(collaborator="site2"), reply_with(sent)).tensors
    assert other is not None and not np.allclose(other["w"], got["w"])  # one plan seed, other noise per site
    fresh = [LocalGaussianNoise(std=0.2)(instruction(), reply_with(sent)).tensors for _ in range(2)]
    assert not np.allclose(fresh[0]["w"], fresh[1]["w"])  # no seed: fresh entropy each time


# -- the chain ------------------------------------------------------------------------------------


class Record(Mod):
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    def __call__(self, instruction: Instruction, call_next):
        self.seen.append(f"{self.name} in")
        reply = call_next(instruction)
        self.seen.append(f"{self.name} out")
        return reply


def test_a_reply_passes_through_the_mods_in_the_plans_order() -> None:
    seen: list[str] = []
    call = chain(reply_with(trained(1.0)), [Record("first", seen), Record("second", seen)])
    call(instruction())
    assert seen == ["second in", "first in", "first out", "second out"]
    clipped_then_noised = chain(reply_with(trained(5.0)), [ClipUpdate(1.0), LocalGaussianNoise(0.0)])
    tensors = clipped_then_noised(instruction()).tensors
    assert tensors is not None
    assert norm({n: tensors[n].astype(np.float64) - GLOBAL[n] for n in ("w", "b")}) == pytest.approx(1.0, rel=1e-5)


def test_a_mods_own_error_becomes_a_site_failure_naming_the_mod() -> None:
    class Broken(Mod):
        def __call__(self, instruction, call_next):
            raise ZeroDivisionError("boom")

    class Silent(Mod):
        def __call__(self, instruction, call_next):
            return None

    with pytest.raises(SiteFailure, match="client mod Broken failed with ZeroDivisionError: boom") as failed:
        chain(reply_with(None), [Broken()])(instruction())
    assert failed.value.report == "client mod Broken failed (ZeroDivisionError)"
    with pytest.raises(SiteFailure, match="client mod Silent returned a NoneType, not a TaskResult"):
        chain(reply_with(None), [Silent()])(instruction())


def test_mods_see_the_global_model_read_only() -> None:
    class Scribble(Mod):
        def __call__(self, instruction, call_next):
            instruction.global_model["w"][0, 0] = 1.0

    with pytest.raises(SiteFailure, match="Scribble failed with ValueError: assignment destination is read-only"):
        chain(reply_with(None), [Scribble()])(instruction())
    assert GLOBAL["w"].flags.writeable


# -- which config a site accepts ---------------------------------------------------------------------

SCHEMA = {"proximal_mu": float, "local_epochs": int, "warm": bool, "schedule": str}


def assigned(config: dict, phase: str = "train") -> TaskAssignment:
    return TaskAssignment(Action.RUN, 1, (TRAIN,), config, phase)


def test_a_site_accepts_its_declared_keys_of_their_types_an_int_for_a_float() -> None:
    got = accept(assigned({"proximal_mu": 1, "local_epochs": 2, "warm": False, "schedule": "cos"}), SCHEMA, "FedProx")
    assert got == {"proximal_mu": 1.0, "local_epochs": 2, "warm": False, "schedule": "cos"}
    assert type(got["proximal_mu"]) is float
    assert accept(assigned({}), {}, "FedAvg") == {}


@pytest.mark.parametrize(
    ("config", "phase", "match", "report"),
    [
        ({"lr": 0.1}, "train", r"config key 'lr', which this site's plan's strategy FedProx does not declare \(it declares \[", "'lr' refused"),
        ({"local_epochs": True}, "train", "'local_epochs' as a bool; this site's plan's strategy FedProx declares it a int", "not a int"),
        ({"warm": 1}, "train", "'warm' as a int; .* declares it a bool", "not a bool"),
        ({"proximal_mu": "0.1"}, "train", "'proximal_mu' as a str; .* declares it a float", "not a float"),
        ({"local_epochs": 1.0}, "train", "'local_epochs' as a float", "not a int"),
        ({}, "mask", "asks for phase 'mask', which this site does not run", "phase 'mask' refused"),
    ],
)
def test_a_site_refuses_a_config_its_plan_does_not_allow_in_one_line(config, phase, match, report) -> None:
    with pytest.raises(Refused, match=match) as refused:
        accept(assigned(config, phase), SCHEMA, "FedProx")
    assert refused.value.kind == "plan" and "same plan" in refused.value.fix
    assert report in refused.value.report


class FakeClient:
    def __init__(self, assignment: TaskAssignment) -> None:
        self.assignments = [assignment, TaskAssignment(Action.QUIT, 2)]
        self.sent: list[TaskResult] = []

    def join(self) -> FederationInfo:
        return FederationInfo("p", 1, 0)

    def get_tasks(self) -> TaskAssignment:
        return self.assignments.pop(0)

    def get_model(self, round_number: int, expected=None):
        return {k: v.copy() for k, v in GLOBAL.items()}

    def send_result(self, result: TaskResult) -> None:
        self.sent.append(result)

    def close(self) -> None:
        pass


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.weights = {k: v.copy() for k, v in GLOBAL.items()}

    def get_weights(self, with_optimizer: bool = False):
        return {k: v.copy() for k, v in self.weights.items()}

    def set_weights(self, state, with_optimizer: bool = False) -> None:
        self.weights = {k: np.array(v) for k, v in state.items()}

    def reset_optimizer(self) -> None:
        pass

    def train(self, data, **kwargs) -> TaskOutput:
        self.calls.append(("train", kwargs))
        self.weights["w"] = self.weights["w"] + 1.0
        return TaskOutput({"loss": 0.5}, 10)

    def validate(self, data, **kwargs) -> TaskOutput:
        self.calls.append(("validate", kwargs))
        return TaskOutput({"accuracy": 0.5}, 10)


def test_a_refused_config_runs_nothing_tells_the_aggregator_and_stops_the_site() -> None:
    client = FakeClient(assigned({"lr": 0.1}))
    runner = FakeRunner()
    site = Collaborator("site1", client, runner, data=object(), config_schema=SCHEMA, strategy="FedProx")
    with pytest.raises(Refused, match="config key 'lr'"):
        site.run()
    assert runner.calls == []
    (report,) = client.sent
    assert report.failure.startswith("config key 'lr' refused by the site") and report.tensors is None


def test_accepted_config_reaches_training_tasks_on_top_of_the_plans_kwargs_and_mods_see_the_reply() -> None:
    tasks = (Task("aggregated_model_validation", "validate", {"apply": "global"}), Task("train", "train", {"epochs": 1, "proximal_mu": 0.5}))
    client = FakeClient(TaskAssignment(Action.RUN, 0, tasks, {"proximal_mu": 0.01}))
    runner = FakeRunner()
    site = Collaborator("site1", client, runner, data=object(), config_schema=SCHEMA, mods=[ClipUpdate(1.0)])
    assert site.run() == 1
    assert runner.calls == [("validate", {}), ("train", {"epochs": 1, "proximal_mu": 0.01})]  # the round's config wins
    validation, train = client.sent
    assert validation.tensors is None and train.phase == "train" and train.model_digest == validation.model_digest != ""
    assert norm({n: train.tensors[n].astype(np.float64) - GLOBAL[n] for n in ("w", "b")}) == pytest.approx(1.0, rel=1e-5)


# -- the plan's collaborator.settings.mods ----------------------------------------------------------


def test_the_plans_mods_are_built_in_order_with_typed_settings(workspace_factory) -> None:
    mods = [
        {"template": "accord.mods.ClipUpdate", "settings": {"max_norm": 2}},
        {"template": "accord.mods.gaussian_noise.LocalGaussianNoise", "settings": {"std": 0.1, "seed": 3, "seed_for_tests_only": True}},
    ]
    plan = workspace_factory(["a"], overrides={"collaborator.settings.mods": mods})
    clip, noise = plan.mods()
    assert isinstance(clip, ClipUpdate) and clip.max_norm == 2.0
    assert isinstance(noise, LocalGaussianNoise) and (noise.std, noise.seed) == (0.1, 3)


@pytest.mark.parametrize(
    ("mod", "match"),
    [
        ({"template": "os.system"}, r"'os.system' is not allowed: a mod template names one of Accord's \(accord.mods.Name"),
        ({"template": "accord.strategies.FedAvg"}, "is not allowed: a mod template"),
        ({"template": "accord.mods.ClipUpdate", "settings": {"max_norm": "big"}}, r"mods\[0\]: accord.mods.ClipUpdate settings are wrong: max_norm"),
        ({"template": "accord.mods.ClipUpdate", "settings": {"norm": 1.0}}, "does not accept these settings"),
        ({"template": "accord.mods.base.Instruction"}, r"mods\[0\].template accord.mods.base.Instruction is not a Mod class"),
        ({"template": "accord.mods.ClipUpdate", "extra": 1}, "extra"),
    ],
)
def test_a_wrong_mod_in_the_plan_is_refused_in_one_line(workspace_factory, mod, match) -> None:
    with pytest.raises(AccordError, match=match):  # when the plan loads
        workspace_factory(["a"], overrides={"collaborator.settings.mods": [mod]})
