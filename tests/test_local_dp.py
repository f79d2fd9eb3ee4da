"""Local DP as a client mod (mods/local_dp.py): clip then noise, in that order; the site's own
epsilon in its training reply's metrics is dp-accounting's; the plan refuses a clipping mod
after a noise mod; bad settings are one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_mods import GLOBAL, instruction, reply_with, trained

pytest.importorskip("dp_accounting")
import dp_accounting

from accord.errors import AccordError, PlanError
from accord.messages import Task
from accord.mods import ClipUpdate, LocalDP, LocalGaussianNoise
from accord.plan.mods import build_mods
from accord.plan.schema import ModSettings


def change(tensors: dict) -> np.ndarray:
    return np.concatenate([(np.asarray(tensors[n], np.float64) - GLOBAL[n]).ravel() for n in ("w", "b")])


def test_local_dp_clips_then_adds_noise_of_z_times_the_clip() -> None:
    mod = LocalDP(max_norm=1.0, noise_multiplier=0.5, seed=3)
    got = mod(instruction(), reply_with(trained(5.0)))  # the change is far longer than 1
    clipped = ClipUpdate(1.0)(instruction(), reply_with(trained(5.0)))
    expected = LocalGaussianNoise(0.5, seed=3)(instruction(), lambda _: clipped)
    assert got.tensors is not None and expected.tensors is not None
    np.testing.assert_array_equal(change(got.tensors), change(expected.tensors))
    assert got.tensors["steps"] == 9 and np.all(got.tensors["__opt__.w.exp_avg"] == 7.0)  # not released as noise


def test_the_noise_has_std_z_times_max_norm() -> None:
    size = 100_000
    model = {"w": np.zeros(size, np.float32)}
    mod = LocalDP(max_norm=2.0, noise_multiplier=0.3)
    got = mod(instruction(global_model=model), reply_with({"w": np.zeros(size, np.float32)}))
    assert got.tensors is not None
    assert np.asarray(got.tensors["w"], np.float64).std() == pytest.approx(0.6, rel=0.02)


def test_the_sites_epsilon_is_dp_accountings_and_counts_every_round() -> None:
    mod = LocalDP(max_norm=1.0, noise_multiplier=2.0, delta=1e-6)
    got = mod(instruction(round_number=4), reply_with(trained(0.1)))
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.GaussianDpEvent(2.0 / 2), 5)  # rounds 0..4; sensitivity 2 C
    assert got.metrics["local_dp_epsilon"] == pytest.approx(accountant.get_epsilon(1e-6), rel=1e-12)
    assert got.metrics["loss"] == 1.0


def test_an_epsilon_budget_is_spread_over_the_planned_rounds() -> None:
    mod = LocalDP(max_norm=1.0, epsilon=4.0, rounds=10)
    assert mod.epsilon_after(9) == pytest.approx(4.0, rel=1e-3)
    assert mod.epsilon_after(0) < 4.0


def test_validation_replies_pass_untouched() -> None:
    validate = Task("aggregated_model_validation", "validate", {})
    reply = LocalDP(max_norm=1.0, noise_multiplier=1.0)(instruction(task=validate), reply_with(None))
    assert reply.metrics == {"loss": 1.0}


@pytest.mark.parametrize(
    ("settings", "shown"),
    [
        ({"max_norm": 1.0}, "exactly one of noise_multiplier and epsilon"),
        ({"max_norm": 1.0, "noise_multiplier": 1.0, "epsilon": 1.0, "rounds": 3}, "exactly one"),
        ({"max_norm": 1.0, "epsilon": 1.0}, "rounds None"),
        ({"max_norm": 1.0, "noise_multiplier": 0.0}, "noise_multiplier is 0.0"),
        ({"max_norm": 0.0, "noise_multiplier": 1.0}, "max_norm is 0.0"),
        ({"max_norm": 1.0, "noise_multiplier": 1.0, "delta": 2.0}, "delta is 2.0"),
    ],
)
def test_bad_settings_are_one_clear_line(settings: dict, shown: str) -> None:
    with pytest.raises(AccordError, match=shown):
        LocalDP(**settings)


def specs(*entries: tuple[str, dict]) -> list[ModSettings]:
    return [ModSettings(template=t, settings=s) for t, s in entries]


def test_the_plan_refuses_clipping_after_noise(tmp_path: Path) -> None:
    wrong = specs(("accord.mods.LocalGaussianNoise", {"std": 0.1}), ("accord.mods.ClipUpdate", {"max_norm": 1.0}))
    with pytest.raises(PlanError, match=r"mods\[1\] \(ClipUpdate\) comes after mods\[0\] \(LocalGaussianNoise\)"):
        build_mods(wrong, tmp_path)
    right = specs(("accord.mods.ClipUpdate", {"max_norm": 1.0}), ("accord.mods.LocalGaussianNoise", {"std": 0.1}))
    assert [type(m).__name__ for m in build_mods(right, tmp_path)] == ["ClipUpdate", "LocalGaussianNoise"]
    built = build_mods(specs(("accord.mods.LocalDP", {"max_norm": 1.0, "epsilon": 8, "rounds": 5})), tmp_path)
    assert built[0].epsilon_after(4) == pytest.approx(8.0, rel=1e-3)


def test_fx_says_the_wrong_order_in_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from accord.cli.main import main

    assert main(["workspace", "create", "--prefix", str(tmp_path / "ws"), "--template", "torch_digits"]) == 0
    capsys.readouterr()
    mods = [
        {"template": "accord.mods.LocalGaussianNoise", "settings": {"std": 0.1}},
        {"template": "accord.mods.ClipUpdate", "settings": {"max_norm": 1.0}},
    ]
    code = main(["plan", "print", "-w", str(tmp_path / "ws"), "-o", f"collaborator.settings.mods={json.dumps(mods)}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert "mods[1] (ClipUpdate) comes after mods[0] (LocalGaussianNoise)" in err and "list the clipping mod first" in err
