"""fx model export: a real federation's consensus model out of the workspace, in each format,
reproducing the federation's final accuracy on the sites' own validation data."""

from __future__ import annotations

import importlib
import io
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST

from accord.cli.main import main
from accord.collaborator.data_config import data_path_for
from accord.experiment.local import FederationReport, prepare_workspace, run_processes
from accord.export.formats import MAX_SAMPLE_ELEMENTS, parse_shape
from accord.plan.loader import Plan
from accord.plan.objects import use_workspace
from accord.runners.from_plan import build_data_loader
from accord.tensors.state import load_state

FINAL = "aggregated_model_validation/accuracy"


@pytest.fixture(scope="module")
def torch_federation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, FederationReport]:
    """Two sites, two rounds of torch_digits over gRPC and mutual TLS, as fx quickstart runs it."""
    plan = prepare_workspace(tmp_path_factory.mktemp("fed") / "ws", collaborators=2, rounds=2, overrides=FAST)
    report = run_processes(plan, timeout=300)
    assert report.ok, report.returncodes
    return plan, report


def validation_accuracy(plan: Plan, predict: Callable[[np.ndarray], np.ndarray]) -> float:
    """Accuracy of ``predict`` (a batch -> class scores) over every site's validation shard, as the
    aggregator weighs the sites' reports (by sample count)."""
    correct = total = 0
    for name in plan.model.collaborators:
        for x, y in build_data_loader(plan, data_path_for(plan, name)).valid_batches():
            correct += int((np.argmax(predict(x), axis=1) == y).sum())
            total += len(y)
    return correct / total


def fresh_torch_module(plan: Plan):
    """A new, randomly initialised module, built by the workspace's own code from the plan's kwargs."""
    use_workspace(plan.workspace)
    build = importlib.import_module("src.model").build_model
    return build(**plan.model.task_runner.settings["model_kwargs"])


def export(plan: Plan, *args: str) -> int:
    return main(["model", "export", "-w", str(plan.workspace), *args])


def test_saved_model_holds_optimizer_state_the_export_leaves_out(torch_federation, tmp_path: Path) -> None:
    plan, _ = torch_federation
    saved = load_state(plan.workspace / "save" / "last.safetensors")
    assert any(name.startswith("__opt__.") for name in saved)  # why load_state_dict on it fails
    out = tmp_path / "model.safetensors"
    assert export(plan, "--last", "--format", "safetensors", "-o", str(out)) == 0
    exported = load_state(out)
    assert list(exported) == list(fresh_torch_module(plan).state_dict())
    assert all(np.array_equal(exported[name], saved[name]) for name in exported)


def test_exported_torch_state_dict_reproduces_the_final_accuracy(torch_federation, capsys) -> None:
    import torch

    plan, report = torch_federation
    assert export(plan, "--last", "--format", "torch") == 0
    path = plan.workspace / "export" / "last.pt"
    assert f"wrote {path}" in capsys.readouterr().out
    module = fresh_torch_module(plan)
    module.load_state_dict(torch.load(path, weights_only=True), strict=True)
    module.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    final = report.aggregated(FINAL)[-1]  # the final validation: every site on the last model
    assert final > 0.5
    assert validation_accuracy(plan, predict) == pytest.approx(final, abs=1e-12)


def test_best_export_is_the_best_safetensors_model(torch_federation) -> None:
    import torch

    plan, _ = torch_federation
    assert export(plan, "--best", "--format", "torch") == 0
    best = load_state(plan.workspace / "save" / "best.safetensors")
    state = torch.load(plan.workspace / "export" / "best.pt", weights_only=True)
    assert set(state) == {n for n in best if not n.startswith("__opt__.")}
    assert all(np.array_equal(state[name].numpy(), best[name]) for name in state)


def test_onnx_export_runs_in_onnxruntime_with_the_final_accuracy(torch_federation, tmp_path: Path, capsys) -> None:
    import onnxruntime

    plan, report = torch_federation
    out = tmp_path / "digits.onnx"
    assert export(plan, "--last", "--format", "onnx", "-o", str(out)) == 0
    assert "(batch, 64)" in capsys.readouterr().out  # the shape read from the data loader
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    predict = lambda x: session.run(["output"], {"input": x})[0]  # noqa: E731
    assert predict(np.zeros((7, 64), np.float32)).shape == (7, 10)  # the batch axis is dynamic
    assert validation_accuracy(plan, predict) == pytest.approx(report.aggregated(FINAL)[-1], abs=1e-12)


def test_openvino_ir_runs_with_the_final_accuracy(torch_federation, tmp_path: Path) -> None:
    from accord.export.graphs import run_openvino

    plan, report = torch_federation
    out = tmp_path / "ir" / "digits.xml"
    assert export(plan, "--last", "--format", "openvino", "-o", str(out), "--input-shape", "64") == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["digits.bin", "digits.xml"]  # no ONNX, no temp folder left
    predict = lambda x: run_openvino(out, x)  # noqa: E731
    assert validation_accuracy(plan, predict) == pytest.approx(report.aggregated(FINAL)[-1], abs=1e-12)


def test_missing_onnx_extra_is_one_line_naming_it(torch_federation, monkeypatch, capsys, tmp_path: Path) -> None:
    plan, _ = torch_federation
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    assert export(plan, "--last", "--format", "onnx", "-o", str(tmp_path / "m.onnx")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'accord[onnx]'" in err
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_missing_openvino_extra_is_one_line_naming_it(torch_federation, monkeypatch, capsys, tmp_path: Path) -> None:
    plan, _ = torch_federation
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert export(plan, "--last", "--format", "openvino", "-o", str(tmp_path / "m.xml")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'accord[openvino]'" in err


def test_bad_requests_end_in_one_line_and_exit_2(torch_federation, capsys, tmp_path: Path) -> None:
    plan, _ = torch_federation
    onnx = tmp_path / "m.onnx"
    cases = [
        (["--last", "--format", "onnx", "--input-shape", "8,x"], "--input-shape '8,x' is not a shape"),
        (["--last", "--format", "onnx", "--input-shape", "1,8,8", "-o", str(onnx)], "torch.onnx.export could not export"),
        (["--best", "--last", "--format", "torch"], "needs one of --best and --last"),
        (["--last", "--format", "keras"], "--format keras needs a Keras task runner"),
        (["--last", "--format", "openvino", "-o", str(tmp_path / "m.bin")], "an OpenVINO IR is a .xml file"),
    ]
    for args, message in cases:
        assert export(plan, *args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (args, err)
    assert not list(tmp_path.iterdir())  # the failed export's staging folder is gone


@pytest.mark.parametrize("shape", ["99999999999999999999", "100000,100000,100000", "30000,30000", "8193,8192", "1," * 40 + "99" * 30])
def test_an_input_shape_past_the_bound_is_one_line(tmp_path: Path, capsys, shape: str) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    # a TypeError or RuntimeError traceback, or gigabytes allocated, before
    assert main(["model", "export", "-w", str(plan.workspace), "--last", "--format", "onnx", "--input-shape", shape]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"holds more than {MAX_SAMPLE_ELEMENTS:,} elements a sample" in err, err
    assert parse_shape("8192,8192") == (8192, 8192)  # 2**26 elements: the bound itself is taken


def test_a_failed_export_leaves_the_earlier_one_untouched(torch_federation, tmp_path: Path) -> None:
    plan, _ = torch_federation
    out = tmp_path / "m.onnx"
    assert export(plan, "--last", "--format", "onnx", "-o", str(out)) == 0
    before = out.read_bytes()
    assert export(plan, "--best", "--format", "onnx", "-o", str(out), "--input-shape", "3,7") == 2
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_no_model_yet_is_one_line(tmp_path: Path, capsys) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    assert main(["model", "export", "-w", str(plan.workspace), "--best", "--format", "torch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no best model yet" in err and "best.safetensors" in err
    assert not (plan.workspace / "export").exists() or not list((plan.workspace / "export").iterdir())


def test_keras_federation_exports_a_keras_file_without_optimizer(tmp_path: Path) -> None:
    """One site, one round of keras_cnn_digits over gRPC; the .keras file loads in safe mode,
    holds no optimizer, and reproduces the final accuracy; .weights.h5 loads into the workspace's model."""
    import h5py
    import keras

    overrides = {"tasks.settings.train.kwargs": {"epochs": 1}}
    plan = prepare_workspace(tmp_path / "ws", 1, 1, template="keras_cnn_digits", overrides=overrides)
    report = run_processes(plan, timeout=300)
    assert report.ok, report.returncodes
    assert any(n.startswith("__opt__.") for n in load_state(plan.workspace / "save" / "last.safetensors"))
    assert main(["model", "export", "-w", str(plan.workspace), "--last", "--format", "keras"]) == 0
    path = plan.workspace / "export" / "last.keras"
    with zipfile.ZipFile(path) as archive:
        assert "optimizer" not in archive.read("config.json").decode()
        stored: list[str] = []
        h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r").visit(stored.append)
    assert any("conv2d" in name for name in stored) and not any("optimizer" in name for name in stored)
    loaded = keras.saving.load_model(path, safe_mode=True)
    predict = lambda x: np.asarray(loaded.predict_on_batch(x))  # noqa: E731
    assert validation_accuracy(plan, predict) == pytest.approx(report.aggregated(FINAL)[-1], abs=1e-12)

    weights = tmp_path / "last.weights.h5"
    assert main(["model", "export", "-w", str(plan.workspace), "--last", "--format", "keras", "-o", str(weights)]) == 0
    use_workspace(plan.workspace)
    fresh = importlib.import_module("src.model").build_model(**plan.model.task_runner.settings["model_kwargs"])
    fresh.load_weights(weights)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    assert np.allclose(fresh.predict_on_batch(x), loaded.predict_on_batch(x), atol=1e-6)
