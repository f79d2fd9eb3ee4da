"""FedAvg (McMahan et al. 2017): the bounded, sample-weighted mean of the cohort's models."""

from __future__ import annotations

from accord.strategies.base import Strategy


class FedAvg(Strategy):
    """Federated averaging: every hook is the base strategy's (strategies/base.py).

    The mean is sample-weighted, with each count capped and each change bounded as the
    plan's ``aggregator.settings.update_bounds`` says (strategies/mean.py).
    """
