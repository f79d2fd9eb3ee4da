"""DP-SGD in the torch runner through Opacus (runners/torch_dp.py) on the digits MLP: it
learns, reports the site's own epsilon (Opacus's RDP accountant's, growing with every task),
calibrates a target epsilon over the planned rounds, clips each example's gradient, refuses a
model Opacus cannot train (BatchNorm) and bad settings in one line."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
opacus = pytest.importorskip("opacus")

from accord.data import DigitsDataLoader  # noqa: E402
from accord.errors import AccordError  # noqa: E402
from accord.runners import TorchTaskRunner  # noqa: E402

MLP = "accord.runners.torch_models.mlp"


@pytest.fixture(scope="module")
def digits() -> DigitsDataLoader:
    return DigitsDataLoader(1, collaborator_count=1, batch_size=64)


def runner(**dp_sgd) -> TorchTaskRunner:
    return TorchTaskRunner(MLP, optimizer={"name": "SGD", "lr": 0.5}, progress=False, model_kwargs={"hidden": 32}, dp_sgd=dp_sgd)


def test_dp_sgd_learns_digits_and_reports_opacus_own_epsilon(digits: DigitsDataLoader) -> None:
    site = runner(max_grad_norm=1.0, noise_multiplier=0.8, noise_seed=1, seed_for_tests_only=True)
    before = site.get_weights()
    first = site.train(digits, epochs=2, metrics=["loss", "accuracy"])
    second = site.train(digits, epochs=2)
    assert list(site.get_weights()) == list(before)  # Opacus leaves the names (no _module. prefix)
    assert 0 < first.metrics["dp_sgd_epsilon"] < second.metrics["dp_sgd_epsilon"]
    sample_rate = 1 / int(np.ceil(digits.train_size / 64))
    steps = 4 * int(np.ceil(digits.train_size / 64))
    accountant = opacus.accountants.RDPAccountant()
    accountant.history = [(0.8, sample_rate, steps)]
    assert second.metrics["dp_sgd_epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    for _ in range(4):
        site.train(digits, epochs=2)
    assert site.validate(digits).metrics["accuracy"] > 0.7
    assert not any(hasattr(p, "grad_sample") for p in site.model.parameters())  # the hooks are gone


def test_a_target_epsilon_is_spread_over_the_planned_rounds(digits: DigitsDataLoader) -> None:
    site = runner(max_grad_norm=1.0, target_epsilon=3.0, rounds=3)
    spent = [site.train(digits, epochs=1).metrics["dp_sgd_epsilon"] for _ in range(3)]
    assert spent == sorted(spent) and spent[-1] == pytest.approx(3.0, abs=0.05)


def test_a_restarted_site_goes_on_from_its_dp_sgd_steps_and_refuses_past_the_target(
    digits: DigitsDataLoader, tmp_path
) -> None:
    """Finding 8 (review 12): the Opacus accountant's steps survive a restart (the site's state
    folder), and a task that would take epsilon past target_epsilon is refused with the reason."""
    from accord.dp.ledger import BudgetSpent

    settings = {"max_grad_norm": 1.0, "target_epsilon": 3.0, "rounds": 2}
    site = runner(**settings)
    site.keep_state_in(tmp_path)
    first = site.train(digits, epochs=1).metrics["dp_sgd_epsilon"]
    restarted = runner(**settings)
    restarted.keep_state_in(tmp_path)
    second = restarted.train(digits, epochs=1).metrics["dp_sgd_epsilon"]  # goes on: not first's figure again
    assert first < second == pytest.approx(3.0, abs=0.05)
    again = runner(**settings)
    again.keep_state_in(tmp_path)
    with pytest.raises(BudgetSpent, match=r"DP-SGD's privacy budget is spent: .* past task_runner\.settings\.dp_sgd"):
        again.train(digits, epochs=1)
    assert again.private is not None and again.private.epsilon() == pytest.approx(second, rel=1e-9)


def test_a_planned_noise_seed_is_refused_without_the_tests_only_flag() -> None:
    """Finding 9 (review 12): the plan is shared; a planned seed lets the aggregator remove the noise."""
    with pytest.raises(AccordError, match="DP-SGD has a seed in the plan") as info:
        runner(max_grad_norm=1.0, noise_multiplier=1.0, noise_seed=4)
    assert "remove task_runner.settings.dp_sgd.noise_seed" in (info.value.fix or "")


def test_each_examples_gradient_is_clipped(digits: DigitsDataLoader) -> None:
    tiny = runner(max_grad_norm=1e-6, noise_multiplier=1e-6, noise_seed=2, seed_for_tests_only=True)
    before = tiny.get_weights()
    tiny.train(digits, epochs=1)
    after = tiny.get_weights()
    moved = max(float(np.abs(after[k] - before[k]).max()) for k in before)
    # lr 0.5 x (at most 1e-6 a step, plus noise of 1e-12) x the steps of one epoch
    assert moved < 0.5 * 1e-5 * int(np.ceil(digits.train_size / 64))


def batchnorm_model(in_features: int = 64, num_classes: int = 10) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(in_features, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, num_classes))


def test_a_batchnorm_model_is_refused_in_one_line() -> None:
    with pytest.raises(AccordError, match=r"the model cannot train with DP-SGD \(Opacus\): .*BatchNorm") as info:
        TorchTaskRunner(batchnorm_model, progress=False, dp_sgd={"max_grad_norm": 1.0, "noise_multiplier": 1.0})
    assert "\n" not in info.value.message and "GroupNorm" in info.value.fix


@pytest.mark.parametrize(
    ("settings", "shown"),
    [
        ({"noise_multiplier": 1.0}, "needs max_grad_norm"),
        ({"max_grad_norm": 1.0}, "exactly one of noise_multiplier and target_epsilon"),
        ({"max_grad_norm": 1.0, "target_epsilon": 1.0}, "target_epsilon needs rounds"),
        ({"max_grad_norm": -1.0, "noise_multiplier": 1.0}, "max_grad_norm is -1.0"),
        ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "delta": 1.5}, "delta is 1.5"),
        ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "sigma": 1.0}, "unknown keys \\['sigma'\\]"),
    ],
)
def test_bad_settings_are_one_clear_line(settings: dict, shown: str) -> None:
    with pytest.raises(AccordError, match=shown):
        TorchTaskRunner(MLP, progress=False, dp_sgd=settings)


def test_fedprox_is_refused_with_dp_sgd(digits: DigitsDataLoader) -> None:
    with pytest.raises(AccordError, match="proximal_mu does not combine"):
        runner(max_grad_norm=1.0, noise_multiplier=1.0).train(digits, proximal_mu=0.1)
