"""Federation (the operator's workspace, CA, signing) and preparing an experiment again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cell

from accord.errors import AccordError, PKIError
from accord.experiment.local import free_port
from accord.interactive import Federation, FLExperiment
from accord.pki import generate_csr
from accord.pki.packages import write_request_package
from accord.plan.freeze import is_frozen

NOTEBOOK = '''
import torch
from accord.interactive import DataInterface, ModelInterface, TaskInterface


def build_model():
    return torch.nn.Linear(64, 10)


def build_optimizer(params):
    return torch.optim.SGD(params, lr=0.1)


class Data(DataInterface):
    def get_train_loader(self):
        return []


TI = TaskInterface()


@TI.register_fl_task(model="model", data_loader="loader", optimizer="optimizer")
def train(model, loader, optimizer):
    return {}


@TI.register_fl_task(model="model", data_loader="loader")
def validate(model, loader):
    return {}
'''


def request(site: Path, name: str) -> tuple[Path, str]:
    """A site's request package, as `fx collaborator generate-cert-request` makes it."""
    _, fingerprint = generate_csr(site / "cert", "collaborator", name)
    package, _ = write_request_package(site / "cert", name, site)
    return package, fingerprint


def test_federation_signs_sites_and_a_new_preparation_keeps_them(tmp_path: Path) -> None:
    nb: dict = {}
    run_cell(NOTEBOOK, nb)
    federation = Federation(tmp_path / "fed", aggregator_address="127.0.0.1", port=free_port())
    assert (federation.cert_dir / "server" / "agg_127.0.0.1.crt").is_file()
    again = Federation(tmp_path / "fed", aggregator_address="127.0.0.1", port=federation.port)
    assert again.root_fingerprint == federation.root_fingerprint  # the CA is reused, not replaced

    package, fingerprint = request(tmp_path / "site", "hospital1")
    with pytest.raises(AccordError, match=r"no plan in .* yet to add hospital1"):
        federation.certify_collaborator(package)

    experiment = FLExperiment(federation, "first")
    model = nb["ModelInterface"](nb["build_model"], nb["build_optimizer"])
    first = experiment.prepare_workspace_distribution(model, nb["TI"], nb["Data"](batch_size=8), rounds_to_train=2)
    with pytest.raises(PKIError, match=r"not the 0000000000000000... the site gave"):
        federation.certify_collaborator(package, fingerprint="0" * 96)
    signed = federation.certify_collaborator(package, output=tmp_path, fingerprint=fingerprint.upper())
    assert signed == tmp_path / "agg_to_col_hospital1_signed_cert.zip" and signed.is_file()
    assert federation.collaborators == ["hospital1"]

    second = experiment.prepare_workspace_distribution(model, nb["TI"], nb["Data"](batch_size=8), rounds_to_train=4)
    assert second == first  # the same archive path, written again
    plan = yaml.safe_load(federation.plan_path.read_text())
    assert plan["collaborators"] == ["hospital1"] and plan["aggregator"]["settings"]["rounds_to_train"] == 4
    assert plan["data_loader"]["settings"]["kwargs"] == {"batch_size": 8}
    assert plan["task_runner"]["settings"]["functions"]["train"]["function"] == "src.experiment.train"
    assert is_frozen(federation.plan_path)

    run = experiment.start_experiment()  # no site comes: stop it; its state waits for a restart
    assert not run.wait(timeout=0.5)
    run.stop()
    assert run.done and run.wait(0)
    saved = json.loads((federation.workspace / "save" / "state" / "snapshot-00000.json").read_text())
    assert saved["round"] == 0 and not saved["finished"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: Federation(tmp, port=0), "port 0 is not a TCP port"),
        (lambda tmp: Federation(tmp, aggregator_address="bad host!"), "invalid aggregator address"),
        (lambda tmp: FLExperiment(Federation(tmp, port=free_port()), "no spaces"), "experiment name"),
        (lambda tmp: FLExperiment(tmp, "x"), "pass a Federation"),
    ],
)
def test_operator_mistakes_are_one_clear_error(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(AccordError, match=message):
        make(tmp_path / "fed")


def test_prepare_refuses_what_is_not_an_interface(tmp_path: Path) -> None:
    nb: dict = {}
    run_cell(NOTEBOOK, nb)
    experiment = FLExperiment(Federation(tmp_path / "fed", port=free_port()), "x")
    model = nb["ModelInterface"](nb["build_model"], nb["build_optimizer"])
    with pytest.raises(AccordError, match="model_provider is a function, not a ModelInterface"):
        experiment.prepare_workspace_distribution(nb["build_model"], nb["TI"], nb["Data"]())
    with pytest.raises(AccordError, match="data_loader is a list, not a DataInterface"):
        experiment.prepare_workspace_distribution(model, nb["TI"], [1, 2])
    with pytest.raises(AccordError, match=r"Data\(\.\.\.\): .* is not a plain value"):
        experiment.prepare_workspace_distribution(model, nb["TI"], nb["Data"](scaler=object()))


def model_from_another_module():
    import torch

    return torch.nn.Linear(64, 10)


def test_prepare_refuses_code_the_sites_may_not_import(tmp_path: Path) -> None:
    """A builder imported from a module of the operator's machine is not copied to src/: refused."""
    nb: dict = {}
    run_cell(NOTEBOOK, nb)
    experiment = FLExperiment(Federation(tmp_path / "fed", port=free_port()), "x")
    model = nb["ModelInterface"](model_from_another_module, nb["build_optimizer"])
    with pytest.raises(AccordError, match=f"task_runner.settings.model is '{__name__}.model_from_another_module', "
                                          "which is not allowed.*define it in the notebook"):
        experiment.prepare_workspace_distribution(model, nb["TI"], nb["Data"]())
    assert not list((tmp_path / "fed").rglob("plan.yaml"))
