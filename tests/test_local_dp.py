"""Local DP as a client mod (mods/local_dp.py): clip then noise, in that order; the site's own
epsilon in its training reply's metrics is dp-accounting's over every release (a round asked
twice counts twice, a restarted site goes on from its ledger); a spent budget refuses training;
a planned seed is refused without the tests-only flag; the plan refuses a clipping mod after a
noise mod; bad settings are one clear line."""

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
from accord.plan.collaborator_settings import ModSettings
from accord.plan.mods import build_mods


def change(tensors: dict) -> np.ndarray:
    return np.concatenate([(np.asarray(tensors[n], np.float64) - GLOBAL[n]).ravel() for n in ("w", "b")])


def test_local_dp_clips_then_adds_noise_of_z_times_the_clip() -> None:
    mod = LocalDP(max_norm=1.0, noise_multiplier=0.5, seed=3, seed_for_tests_only=True)
    got = mod(instruction(), reply_with(trained(5.0)))  # the change is far longer than 1
    clipped = ClipUpdate(1.0)(instruction(), reply_with(trained(5.0)))
    expected = LocalGaussianNoise(0.5, seed=3, seed_for_tests_only=True)(instruction(), lambda _: clipped)
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


def epsilon_of(releases: int, z: float = 2.0, delta: float = 1e-6) -> float:
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.GaussianDpEvent(z / 2), releases)  # sensitivity 2 C
    return float(accountant.get_epsilon(delta))


def test_the_sites_epsilon_is_dp_accountings_and_counts_every_release() -> None:
    """Finding 8 (review 12): round 0 asked three times is three releases, not one."""
    mod = LocalDP(max_norm=1.0, noise_multiplier=2.0, delta=1e-6)
    got = [mod(instruction(round_number=0), reply_with(trained(0.1))) for _ in range(3)]
    assert [g.metrics["local_dp_epsilon"] for g in got] == pytest.approx([epsilon_of(n) for n in (1, 2, 3)], rel=1e-12)
    assert got[-1].metrics["loss"] == 1.0


def test_a_restarted_site_goes_on_from_the_releases_in_its_state_folder(tmp_path: Path) -> None:
    first = LocalDP(max_norm=1.0, noise_multiplier=2.0, delta=1e-6)
    first.keep_state_in(tmp_path / "site")
    for r in range(2):
        first(instruction(round_number=r), reply_with(trained(0.1)))
    restarted = LocalDP(max_norm=1.0, noise_multiplier=2.0, delta=1e-6)
    restarted.keep_state_in(tmp_path / "site")
    got = restarted(instruction(round_number=1), reply_with(trained(0.1)))  # round 1 asked again
    assert got.metrics["local_dp_epsilon"] == pytest.approx(epsilon_of(3), rel=1e-12)


def test_a_damaged_ledger_is_refused_not_taken_as_a_fresh_budget(tmp_path: Path) -> None:
    (tmp_path / "local_dp.json").write_text("{not json")
    with pytest.raises(AccordError, match=r"privacy ledger .*local_dp\.json cannot be read") as info:
        LocalDP(max_norm=1.0, noise_multiplier=2.0).keep_state_in(tmp_path)
    assert "deleting it would forget" in (info.value.fix or "")


def test_an_epsilon_budget_is_spread_over_the_planned_rounds() -> None:
    mod = LocalDP(max_norm=1.0, epsilon=4.0, rounds=10)
    assert mod.epsilon_after(10) == pytest.approx(4.0, rel=1e-3)
    assert mod.epsilon_after(1) < 4.0


def test_training_past_the_budget_is_refused_with_the_reason(tmp_path: Path) -> None:
    """The site refuses the third release of a two-round budget (after a restart too), names why,
    and the refusal reaches the aggregator as the SiteFailure's report; validation still runs."""
    from accord.collaborator.executor import SiteFailure, chain

    mod = LocalDP(max_norm=1.0, epsilon=4.0, rounds=2)
    mod.keep_state_in(tmp_path)
    for _ in range(2):
        mod(instruction(round_number=0), reply_with(trained(0.1)))
    restarted = LocalDP(max_norm=1.0, epsilon=4.0, rounds=2)
    restarted.keep_state_in(tmp_path)
    run = chain(reply_with(trained(0.1)), [restarted])
    with pytest.raises(SiteFailure, match="LocalDP's privacy budget is spent: 2 noised updates sent of the 2") as info:
        run(instruction(round_number=1))
    assert "budget is spent" in info.value.report and "round 1 not trained" in info.value.report
    validate = Task("aggregated_model_validation", "validate", {})
    assert restarted(instruction(task=validate), reply_with(None)).metrics == {"loss": 1.0}


@pytest.mark.parametrize("mod", [LocalDP, LocalGaussianNoise])
def test_a_planned_seed_is_refused_without_the_tests_only_flag(mod: type) -> None:
    """Finding 9 (review 12): with a seed in the shared plan the aggregator can redraw the noise."""
    settings = {"max_norm": 1.0, "noise_multiplier": 1.0} if mod is LocalDP else {"std": 1.0}
    with pytest.raises(AccordError, match=f"{mod.__name__} has a seed in the plan: everyone with the plan") as info:
        mod(**settings, seed=3)
    assert "collaborator.settings.mods[].settings.seed_for_tests_only: true" in (info.value.fix or "")


def test_a_seeded_local_dp_reports_an_infinite_epsilon(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="accord.mods"):
        mod = LocalDP(max_norm=1.0, noise_multiplier=1.0, seed=3, seed_for_tests_only=True)
    assert "protects nothing" in caplog.text
    assert mod(instruction(), reply_with(trained(0.1))).metrics["local_dp_epsilon"] == float("inf")


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
    assert built[0].epsilon_after(5) == pytest.approx(8.0, rel=1e-3)


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


def test_one_mod_for_many_simulated_sites_counts_each_sites_releases() -> None:
    """The simulation runs every client through one mod (no state folder): each site its own count."""
    mod = LocalDP(max_norm=1.0, noise_multiplier=2.0, delta=1e-6)
    for site in ("site1", "site2", "site1"):
        got = mod(instruction(collaborator=site, round_number=0), reply_with(trained(0.1)))
    assert got.metrics["local_dp_epsilon"] == pytest.approx(epsilon_of(2), rel=1e-12)
    assert len(mod.ledger("site2").rows) == 1
