"""The interactive API end to end: a notebook's code becomes a workspace archive; the aggregator
runs from Python, two sites run `fx collaborator start` from the archive, over mutual TLS."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cell, write_digits_shards

from accord.errors import AccordError
from accord.experiment.local import free_port, fx_command
from accord.interactive import Federation, FLExperiment

pytestmark = pytest.mark.e2e

ROUNDS = 3

#: The data scientist's notebook, cell by cell (run as __main__, as Jupyter does).
NOTEBOOK = [
    '''
import numpy as np
import torch
from torch import nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, TensorDataset

from accord.interactive import DataInterface, ModelInterface, TaskInterface

HIDDEN = 64
SETTINGS = {"lr": 0.01, "betas": (0.9, 0.999)}
''',
    '''
def build_model():
    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


def build_optimizer(params):
    return torch.optim.Adam(params, **SETTINGS)


MI = ModelInterface(model=build_model, optimizer=build_optimizer, framework="torch")
''',
    '''
class DigitsShard(DataInterface):
    """One site's shard of the digits, from its .npz file (read without pickle)."""

    def __init__(self, data_path=None, batch_size=32):
        super().__init__(data_path, batch_size=batch_size)
        self.batch_size = batch_size

    def _tensors(self, split):
        with np.load(self.data_path, allow_pickle=False) as arrays:
            return torch.tensor(arrays[f"x_{split}"]), torch.tensor(arrays[f"y_{split}"])

    def get_train_loader(self):
        return DataLoader(TensorDataset(*self._tensors("train")), batch_size=self.batch_size, shuffle=True)

    def get_valid_loader(self):
        return DataLoader(TensorDataset(*self._tensors("valid")), batch_size=256)

    def get_train_data_size(self):
        return len(self._tensors("train")[1])

    def get_valid_data_size(self):
        return len(self._tensors("valid")[1])


fed_data = DigitsShard(batch_size=32)
''',
    '''
TI = TaskInterface()


@TI.add_kwargs(epochs=2)
@TI.register_fl_task(model="net_model", data_loader="train_loader", device="device", optimizer="optimizer")
def train(net_model, train_loader, optimizer, device, epochs=1):
    net_model.train()
    for _ in range(epochs):
        total, count = 0.0, 0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = cross_entropy(net_model(x.to(device)), y.to(device))
            loss.backward()
            optimizer.step()
            total, count = total + float(loss) * len(y), count + len(y)
    return {"loss": total / count}


@TI.register_fl_task(model="net_model", data_loader="val_loader", device="device")
def validate(net_model, val_loader, device):
    net_model.eval()
    correct, count = 0, 0
    with torch.no_grad():
        for x, y in val_loader:
            correct += int((net_model(x.to(device)).argmax(dim=1) == y.to(device)).sum())
            count += len(y)
    return {"accuracy": correct / count}
''',
]


def fx(*args: str) -> str:
    done = subprocess.run(fx_command(*args), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"fx {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_notebook_to_archive_to_two_fx_sites_over_mutual_tls(tmp_path: Path) -> None:
    notebook: dict = {}
    for cell in NOTEBOOK:
        run_cell(cell, notebook)
    shards, x_valid, y_valid = write_digits_shards(tmp_path / "data", 2)
    outbox = tmp_path / "outbox"
    outbox.mkdir()

    federation = Federation(workspace=tmp_path / "operator", aggregator_address="127.0.0.1", port=free_port())
    experiment = FLExperiment(federation, "digits")
    archive = experiment.prepare_workspace_distribution(
        notebook["MI"], notebook["TI"], notebook["fed_data"],
        rounds_to_train=ROUNDS, opt_treatment="CONTINUE_GLOBAL",
        override_config={"task_runner.settings.num_threads": 1},
    )
    with pytest.raises(AccordError, match="no site has been certified"):
        experiment.start_experiment()

    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
        contents = {name: zf.read(name) for name in names}
    assert names == ["manifest.json", "plan/plan.yaml", "requirements.txt", "src/__init__.py", "src/experiment.py"]
    for name, data in contents.items():
        assert b"PRIVATE KEY" not in data, name
        assert not data.startswith(b"\x80"), f"{name} looks like a pickle"
    code = contents["src/experiment.py"].decode()
    assert "import pickle" not in code and "TI." not in code and "fed_data" not in code
    assert "def train(net_model, train_loader, optimizer, device, epochs=1):" in code
    assert "SETTINGS = {'lr': 0.01, 'betas': (0.9, 0.999)}" in code
    assert "from accord.interactive import DataInterface" in code
    assert "from torch.utils.data import DataLoader, TensorDataset" not in code  # one import line a name
    assert "from torch.utils.data import TensorDataset" in code
    assert "torch==" in contents["requirements.txt"].decode()

    sites = {"hospital1": tmp_path / "site1", "hospital2": tmp_path / "site2"}
    for (name, site), shard in zip(sites.items(), shards):
        fx("workspace", "import", "--archive", str(archive), "--prefix", str(site))
        fx("collaborator", "generate-cert-request", "-n", name, "-w", str(site), "--data-path", str(shard), "--output", str(outbox))
        signed = federation.certify_collaborator(outbox / f"col_{name}_to_agg_cert_request.zip", output=outbox)
        fx("collaborator", "certify", "--import", str(signed), "-w", str(site))
        assert not list(site.glob("cert/ca/**/*.key")), "CA keys must never reach a site"
    assert federation.collaborators == list(sites)

    run = experiment.start_experiment()
    processes = [
        subprocess.Popen(fx_command("collaborator", "start", "-n", name, "-w", str(site)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, site in sites.items()
    ]
    try:
        outputs = [proc.communicate(timeout=240)[0] for proc in processes]
        assert run.wait(timeout=60), "the aggregator did not finish"
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(processes, outputs):
        assert proc.returncode == 0, out
        assert f"finished after working in {ROUNDS + 1} rounds" in out, out

    rounds = {r.round for r in run.records if r.origin == "aggregator" and r.task == "train"}
    assert rounds == set(range(ROUNDS))
    accuracy = run.aggregated("aggregated_model_validation/accuracy")
    assert len(accuracy) == ROUNDS + 1 and accuracy[-1] >= 0.9, accuracy

    import torch

    model = run.get_last_model()
    with torch.no_grad():
        predicted = model(torch.tensor(x_valid)).argmax(dim=1).numpy()
    final = float(np.mean(predicted == y_valid))
    assert final == pytest.approx(accuracy[-1], abs=1e-9)
    assert run.get_best_model() is not None
    print(f"interactive API: final accuracy {final:.4f}, per round {[round(a, 4) for a in accuracy]}")
