"""The Flower ServerApp: FedAvg over every site for ``rounds`` rounds from the bench's initial
model; it writes when each round ended (rounds.json) and the final model (final.npz) to out-dir."""

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digitsbench.digits_mlp import NAMES, load_npz

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    sites, out = int(cfg["sites"]), Path(str(cfg["out-dir"]))
    initial = load_npz(str(Path(str(cfg["data-dir"])) / "init.npz"))
    ends: list[float] = []

    def round_ended(server_round: int, arrays: ArrayRecord) -> None:
        if server_round > 0:  # Flower calls it once before the first round too
            ends.append(time.time())

    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=sites, min_evaluate_nodes=sites, min_available_nodes=sites)
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord([initial[name] for name in NAMES]), num_rounds=int(cfg["rounds"]), evaluate_fn=round_ended
    )
    np.savez(out / "final.npz", **dict(zip(NAMES, result.arrays.to_numpy_ndarrays())))
    (out / "rounds.json").write_text(json.dumps(ends))
