"""Round time of a real Accord federation at N sites, as a ratio to the same FedAvg work done
with no framework in one process, measured in the same run, interleaved.

    .venv/bin/python bench/round_time.py [--sites 8] [--rounds 8] [--repeats 3] [--before SRC]

Workload: the torch_digits template as `fx quickstart` makes it (digits MLP 64-128-128-10,
Adam lr 0.003 with its state averaged too (CONTINUE_GLOBAL), 2 local epochs of batch 32, IID
shards of the 80% train split and of the 20% validation split, one shard a site, one torch
thread a process).

- **baseline** (no framework, one process, torch and NumPy only): a round is, for each of the
  N sites in turn, load the global weights and Adam state into that site's torch model and
  optimizer, validate on its validation shard (accuracy, loss), train the epochs on its train
  shard (shuffled each epoch), validate again; then the sample-weighted mean (float64 NumPy)
  of the N trained weights and Adam states is the next global model. The same three tasks a
  site runs in Accord, and the same mean. Not in it: processes, TLS, gRPC, serialisation, the
  journal, any file. The shards are made once, before the timing, with Accord's
  DigitsDataLoader (the same shards the federation's sites load) and held as torch tensors.
  Its round time is the median (and min) over its rounds.
- **accord**: `accord.experiment.local.run_processes`: `fx aggregator start` and N `fx
  collaborator start` processes over mutual TLS on 127.0.0.1, from a fresh workspace. Its
  round time is the aggregator's `round/round_seconds` (from a round's opening to its close;
  the next opens at once), median and min over the rounds after the first (the first holds
  the start-up and the joins); `overhead` is `round/overhead_seconds` (round time minus the
  slowest site's summed task time).

Each repeat runs the baseline, then a federation; the ratio is per repeat (accord median /
baseline median of that repeat), reported as min and median over the repeats. With
``--before SRC`` (the ``src`` folder of another Accord checkout, e.g. main's), each repeat
also runs a federation from those sources (its processes get SRC first on PYTHONPATH), so
the two versions are compared in the same run, each as a ratio to the same baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

EPOCHS, BATCH, LR, HIDDEN = 2, 32, 0.003, 128


class Site:
    """One site's shard, model and optimizer, in plain torch."""

    def __init__(self, shard: int, sites: int) -> None:
        import torch

        from accord.data.builtin import DigitsDataLoader

        data = DigitsDataLoader(data_path=shard, collaborator_count=sites, batch_size=BATCH, valid_fraction=0.2, seed=0)
        self.x_train, self.y_train = torch.from_numpy(data._x_train), torch.from_numpy(data._y_train)
        self.x_valid, self.y_valid = torch.from_numpy(data._x_valid), torch.from_numpy(data._y_valid)
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10)
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.generator = torch.Generator().manual_seed(shard)
        self.samples = len(self.y_train)

    def state(self) -> dict[str, np.ndarray]:
        """Weights and Adam state as float arrays (state made at the first call)."""
        params = dict(self.model.named_parameters())
        state = {name: p.detach().numpy().copy() for name, p in params.items()}
        for name, p in params.items():
            slot = self.optimizer.state[p]
            if not slot:
                import torch

                slot.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            for key in ("step", "exp_avg", "exp_avg_sq"):
                state[f"opt.{name}.{key}"] = slot[key].detach().numpy().copy()
        return state

    def load(self, state: dict[str, np.ndarray]) -> None:
        import torch

        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(torch.from_numpy(state[name]))
                slot = self.optimizer.state[p]
                for key in ("step", "exp_avg", "exp_avg_sq"):
                    slot[key] = torch.from_numpy(state[f"opt.{name}.{key}"].copy())

    def validate(self) -> tuple[float, float]:
        import torch

        with torch.no_grad():
            out = self.model(self.x_valid)
            loss = float(torch.nn.functional.cross_entropy(out, self.y_valid))
            return float((out.argmax(1) == self.y_valid).float().mean()), loss

    def train(self) -> None:
        import torch

        self.model.train()
        for _ in range(EPOCHS):
            order = torch.randperm(self.samples, generator=self.generator)
            for start in range(0, self.samples, BATCH):
                chosen = order[start : start + BATCH]
                self.optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(self.model(self.x_train[chosen]), self.y_train[chosen])
                loss.backward()
                self.optimizer.step()


def baseline_rounds(sites: list[Site], rounds: int) -> list[float]:
    """Seconds of each of ``rounds`` no-framework FedAvg rounds over ``sites``."""
    model = sites[0].state()
    total = sum(site.samples for site in sites)
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        summed = {name: np.zeros(value.shape, np.float64) for name, value in model.items()}
        for site in sites:
            site.load(model)
            site.validate()
            site.train()
            site.validate()
            for name, value in site.state().items():
                summed[name] += value * (site.samples / total)
        model = {name: value.astype(model[name].dtype) for name, value in summed.items()}
        seconds.append(time.perf_counter() - started)
    return seconds


def accord_rounds(sites: int, rounds: int, source: str | None = None) -> tuple[list[float], list[float]]:
    """Round and overhead seconds of a real federation (its processes run Accord from
    ``source`` when given), the first round and the final validation left out."""
    from accord.experiment.local import prepare_workspace, run_processes

    workspace = Path(tempfile.mkdtemp(prefix="accord-round-time-")) / "ws"
    plan = prepare_workspace(workspace, sites, rounds)
    saved = os.environ.get("PYTHONPATH")
    if source is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (source, saved) if p)
    try:
        report = run_processes(plan)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    if not report.ok:
        raise SystemExit(f"the federation failed: {report.returncodes} (logs in {workspace / 'logs'})")
    return report.aggregated("round/round_seconds")[1:rounds], report.aggregated("round/overhead_seconds")[1:rounds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", help="the src folder of another Accord checkout, run interleaved for comparison")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # as each site's runner (task_runner.settings.num_threads)
    sites = [Site(shard, args.sites) for shard in range(1, args.sites + 1)]
    versions = {"accord": None, **({"before": args.before} if args.before else {})}
    ratios: dict[str, list[float]] = {name: [] for name in versions}
    for repeat in range(1, args.repeats + 1):
        base = baseline_rounds(sites, args.rounds)
        line = f"repeat {repeat}: baseline round median {1000 * statistics.median(base):.1f} ms (min {1000 * min(base):.1f})"
        for name, source in versions.items():
            fed, overhead = accord_rounds(args.sites, args.rounds + 1, source)
            ratio = statistics.median(fed) / statistics.median(base)
            ratios[name].append(ratio)
            line += (
                f"; {name} round median {1000 * statistics.median(fed):.1f} ms (min {1000 * min(fed):.1f}), "
                f"overhead median {1000 * statistics.median(overhead):.1f} ms, ratio {ratio:.2f}x"
            )
        print(line, flush=True)
    for name, values in ratios.items():
        print(
            f"{name}: {args.sites} sites, {args.rounds} rounds a run: round time / no-framework round time "
            f"min {min(values):.2f}x, median {statistics.median(values):.2f}x over {args.repeats} repeats"
        )


if __name__ == "__main__":
    main()
