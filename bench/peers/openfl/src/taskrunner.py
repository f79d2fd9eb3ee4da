"""OpenFL task runner of the digits workload: OpenFL's PyTorchTaskRunner over digits_mlp."""

import numpy as np
import torch
from openfl.federated import PyTorchTaskRunner
from openfl.utilities import Metric

from src.digits_mlp import NAMES, accuracy, build_mlp, load_npz, set_weights, train_epoch


class DigitsRunner(PyTorchTaskRunner):
    """The MLP starts from the bench's initial weights; the plan's RESET makes a fresh Adam per round."""

    def __init__(self, init_weights, lr, device="cpu", **kwargs):
        super().__init__(device=device, **kwargs)
        self.model = build_mlp()
        initial = load_npz(init_weights)
        set_weights(self.model, [initial[name] for name in NAMES])
        self.lr = float(lr)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def forward(self, x):
        return self.model(x)

    def reset_opt_vars(self):
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def train_(self, train_dataloader):
        x, y = train_dataloader
        loss = train_epoch(self.model, self.optimizer, x, y, self.data_loader.batch_size, self.data_loader.rng)
        return Metric(name="loss", value=np.array(loss))

    def validate_(self, validation_dataloader):
        x, y = validation_dataloader
        return Metric(name="accuracy", value=np.array(accuracy(self.model, x, y)))
