"""OpenFL 1.6-1.9 plans read as Accord's: every key and template mapped, warned about once or
refused in one line naming the key and the fix; data.yaml's name,path lines; cols.yaml."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from accord.cli.main import main
from accord.collaborator.data_config import read_data_config, record_data_path
from accord.errors import PlanError
from accord.plan.loader import load_plan, read_yaml
from accord.plan.openfl_keys import KEYS, openfl_class
from accord.plan.schema import SECTIONS

DATA = Path(__file__).parent / "data" / "openfl"

#: the keys of the verbatim workspaces that have no meaning in Accord (each warned once)
WARNED = {
    "aggregator.settings.db_store_rounds",
    "aggregator.settings.persist_checkpoint",
    "aggregator.settings.persistent_db_path",
    "collaborator.settings.db_store_rounds",
    "network.settings.agg_addr",
    "network.settings.agg_port",
    "network.settings.hash_salt",
    "network.settings.client_reconnect_interval",
    "network.settings.enable_atomic_connections",
}


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == logging.WARNING]


@pytest.fixture
def plan_log() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("accord.plan")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def copy_of(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(DATA / name, target)
    return target


def _raw_keys(ws: Path) -> tuple[set[str], set[str]]:
    """Every ``section.settings.key`` and every openfl.* template of an OpenFL plan and its defaults."""
    raw = read_yaml(ws / "plan" / "plan.yaml")
    keys: set[str] = set()
    templates: set[str] = set()
    for name in SECTIONS:
        section = raw.get(name) or {}
        parts = [section]
        if section.get("defaults"):
            parts.insert(0, read_yaml(ws / section["defaults"]))
        template = next((p["template"] for p in reversed(parts) if p.get("template")), None)
        if openfl_class(template):
            templates.add(f"{name}.template {template}")
        if name in ("data_loader", "task_runner", "tasks"):
            continue  # the workspace's own code's arguments; tasks are checked as tasks
        for part in parts:
            keys |= {f"{name}.settings.{key}" for key in part.get("settings") or {}}
    return keys, templates


@pytest.mark.parametrize("name", ["torch_mnist", "keras_mnist"])
def test_the_verbatim_workspaces_load_with_the_expected_warnings_and_nothing_silent(
    name: str, tmp_path: Path, plan_log: Lines
) -> None:
    ws = copy_of(name, tmp_path)
    plan = load_plan(ws / "plan" / "plan.yaml")
    warned = {note.key for note in plan.openfl_notes if note.warned}
    assert warned == WARNED
    assert all("has no meaning in Accord" in note.detail for note in plan.openfl_notes if note.warned)
    assert sorted(w.split("OpenFL ", 1)[1].split(":")[0] for w in plan_log.warnings()) == sorted(WARNED)
    keys, templates = _raw_keys(ws)
    noted = {note.key for note in plan.openfl_notes}
    spelled_alike = {
        "aggregator.settings.rounds_to_train",
        "collaborator.settings.opt_treatment",
        "assigner.settings.task_groups",
    }
    assert keys - noted - spelled_alike == set()
    assert templates - noted == set()
    # what the plan now says, in Accord's terms
    model = plan.model
    assert model.aggregator.template is None and model.collaborator.template is None
    assert model.aggregator.settings.init_state_path == "save/init.safetensors"
    assert model.assigner.template == "accord.aggregator.assigner.RandomGroupedAssigner"
    assert [g.name for g in model.assigner.settings.task_groups] == ["learning"]
    assert {t: s.function for t, s in model.tasks.settings.items()} == {
        "aggregated_model_validation": "validate",
        "locally_tuned_model_validation": "validate",
        "train": "train",
    }
    assert model.tasks.settings["locally_tuned_model_validation"].kwargs["apply"] == "local"
    assert model.network.settings.cert_dir == "cert"
    assert model.collaborator.settings.delta_updates is False  # the plan's use_delta_updates over the defaults' True
    # loading again warns no more (one warning a key)
    load_plan(ws / "plan" / "plan.yaml")
    assert len(plan_log.warnings()) == len(WARNED)


def _warns(key: str, value: object) -> bool:
    try:
        return KEYS[key](key, value).warned
    except PlanError:
        return False


#: every key of the table that is accepted with a warning (agg_addr/agg_port: when "auto")
NO_MEANING = sorted(key for key in KEYS if _warns(key, "auto" if key.startswith("network.settings.agg_") else 3))


@pytest.mark.parametrize("key", NO_MEANING)
def test_each_key_without_meaning_gives_one_warning_naming_it(key: str, tmp_path: Path, plan_log: Lines) -> None:
    ws = copy_of("torch_mnist", tmp_path)
    value = "auto" if key.startswith("network.settings.agg_") else 3
    plan = load_plan(ws / "plan" / "plan.yaml", {key: value})
    plan = load_plan(ws / "plan" / "plan.yaml", {key: value})
    mine = [w for w in plan_log.warnings() if f"OpenFL {key}:" in w]
    assert len(mine) == 1 and "has no meaning in Accord" in mine[0]
    assert key in {n.key for n in plan.openfl_notes if n.warned}


REFUSED = [
    ("aggregator.settings.log_metric_callback", "os.system", "src.module.function"),
    ("aggregator.settings.log_metric_callback", "{template: src.m.f, settings: {a: 1}}", "read them in the function"),
    ("aggregator.settings.callbacks", "[src.cb.Cb]", "aggregator.settings.metrics.callback"),
    ("aggregator.settings.initial_tensor_dict", "{}", "fx plan initialize"),
    ("network.settings.use_tls", "false", "certify each site"),
    ("network.settings.require_client_auth", "false", "certify each site"),
    ("network.settings.disable_tls", "true", "certify each site"),
    ("network.settings.transport_protocol", "rest", "transport_protocol: grpc"),
    ("collaborator.settings.callbacks", "[src.cb.Cb]", "train_/validate_"),
    ("collaborator.settings.interop_mode", "true", "task runner"),
    ("compression_pipeline.template", "openfl.pipelines.KCPipeline", "compression_pipeline.settings.upload"),
    ("compression_pipeline.template", "openfl.pipelines.STCPipeline", "compression_pipeline.settings.upload"),
    ("task_runner.template", "openfl.federated.task_runner.CoreTaskRunner", "src.taskrunner.Name"),
    ("data_loader.template", "openfl.federated.DataLoader", "src.dataloader.Name"),
    ("assigner.template", "openfl.component.Assigner", "RandomGroupedAssigner"),
    ("aggregator.template", "openfl.component.Aggregator2", "Aggregator"),
    (
        "tasks.train.aggregation_type",
        "{template: openfl.interface.aggregation_functions.FedCurvWeightedAverage}",
        "FedProx",
    ),
    (
        "tasks.train.aggregation_type",
        "{template: openfl.interface.aggregation_functions.SecureWeightedAverage}",
        "secure_aggregation.enabled: true",
    ),
    ("tasks.train.aggregation_type", "{template: os.system}", "aggregator.settings.strategy"),
    ("tasks.train.function", "start_client_adapter", "train_task or validate_task"),
    ("tasks.settings", "{interop_server_port: auto}", "remove tasks.settings"),
    ("connector", "{template: openfl.component.ConnectorFlower}", "remove the connector section"),
    # a string is not a switch: bool('false') would turn secure aggregation on
    ("aggregator.settings.secure_aggregation", "'false'", "secure_aggregation: true (or false)"),
    ("collaborator.settings.use_delta_updates", "'no'", "use_delta_updates: true (or false)"),
    ("aggregator.settings", "[1]", "write aggregator.settings as key: value lines"),
    ("tasks.train.kwargs", "[epochs, 1]", "write tasks.train.kwargs as key: value lines"),
]


@pytest.mark.parametrize(("key", "value", "fix"), REFUSED, ids=[f"{k}={v}" for k, v, _ in REFUSED])
def test_each_refused_key_is_one_line_naming_it_and_the_fix_exit_2(
    key: str, value: str, fix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = copy_of("torch_mnist", tmp_path)
    before = (ws / "plan" / "plan.yaml").read_bytes()
    assert main(["--log-level", "ERROR", "plan", "print", "-w", str(ws), "--override", f"{key}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    shown = key.split(".settings.")[-1] if key.startswith("tasks.") else key
    assert shown.split(".")[0] in err and "(fix: " in err and fix in err, err
    assert (ws / "plan" / "plan.yaml").read_bytes() == before


def test_mapped_keys_land_on_accord_s_settings(tmp_path: Path) -> None:
    ws = copy_of("torch_mnist", tmp_path)
    overrides = {
        "tasks.train.aggregation_type": {
            "template": "openfl.interface.aggregation_functions.AdamAdaptiveAggregation",
            "settings": {"learning_rate": 0.05, "betas": [0.8, 0.95]},
        },
        "straggler_handling_policy": {
            "template": "openfl.component.aggregator.straggler_handling.CutoffTimePolicy",
            "settings": {"straggler_cutoff_time": 120, "minimum_reporting": 1},
        },
        "aggregator.settings.write_logs": True,
        "aggregator.settings.secure_aggregation": False,
        "network.settings.agg_port": 50123,
        "network.settings.cert_folder": "pki",
        "aggregator.settings.log_metric_callback": {"template": "src.metrics_log.write_metric"},
    }
    model = load_plan(ws / "plan" / "plan.yaml", overrides).model
    strategy = model.aggregator.settings.strategy
    assert strategy.template == "accord.strategies.FedAdam"
    assert strategy.settings == {"eta": 0.05, "beta1": 0.8, "beta2": 0.95}
    stragglers = model.straggler_handling_policy.settings
    assert (stragglers.policy, stragglers.cutoff_seconds, stragglers.min_reports) == ("cutoff_time", 120.0, 1)
    assert model.aggregator.settings.metrics.tensorboard is not None
    assert model.aggregator.settings.metrics.callback.template == "src.metrics_log.write_metric"
    assert model.network.settings.agg_port == 50123 and model.network.settings.cert_dir == "pki"
    median = {"template": "openfl.interface.aggregation_functions.Median"}
    model = load_plan(ws / "plan" / "plan.yaml", {"tasks.train.aggregation_type": median}).model
    assert model.aggregator.settings.strategy.template == "accord.strategies.CoordinateMedian"
    accord_layout = {"settings": {"train": {"function": "train_task", "kwargs": {"epochs": 2}}}}
    model = load_plan(ws / "plan" / "plan.yaml", {"tasks": accord_layout}).model  # Accord's layout in an OpenFL plan
    assert (model.tasks.settings["train"].function, model.tasks.settings["train"].kwargs) == ("train", {"epochs": 2})
    percentage = {"template": "openfl.component.PercentagePolicy", "settings": {"percent_collaborators_needed": 0.5}}
    model = load_plan(ws / "plan" / "plan.yaml", {"straggler_handling_policy": percentage}).model
    assert model.straggler_handling_policy.settings.policy == "percentage"
    assert model.straggler_handling_policy.settings.percentage == 0.5


def test_an_accord_plan_is_not_translated(tmp_path: Path) -> None:
    assert main(["workspace", "create", "--prefix", str(tmp_path / "ws"), "--template", "torch_digits"]) == 0
    assert load_plan(tmp_path / "ws" / "plan" / "plan.yaml").openfl_notes == ()


def test_cols_yaml_is_the_collaborators_list_when_the_plan_has_none(tmp_path: Path) -> None:
    ws = copy_of("keras_mnist", tmp_path)
    (ws / "plan" / "cols.yaml").write_text("collaborators:\n  - one\n  - two\n")
    assert load_plan(ws / "plan" / "plan.yaml").model.collaborators == ["one", "two"]
    (ws / "plan" / "cols.yaml").write_text("collaborators: one\n")
    assert main(["plan", "print", "-w", str(ws)]) == 2


def test_data_yaml_name_path_lines_are_read_and_kept_in_their_format(tmp_path: Path) -> None:
    config = tmp_path / "data.yaml"
    config.write_text("# collaborator_name,data_directory_path\none,1\ntwo,/data/site two,b\n")
    assert read_data_config(config) == {"one": "1", "two": "/data/site two,b"}
    assert record_data_path(config, "three", "3") == ("3", True)
    assert config.read_text().splitlines()[-1] == "three,3" and config.read_text().startswith("# collaborator_name")
    assert read_data_config(config)["three"] == "3"
    record_data_path(config, "one", "9")
    assert read_data_config(config) == {"two": "/data/site two,b", "three": "3", "one": "9"}
    config.write_text("one,1\none,2\n")
    with pytest.raises(Exception, match="listed twice"):
        read_data_config(config)
    yaml_config = tmp_path / "accord.yaml"
    yaml_config.write_text("one: 1\n")
    assert read_data_config(yaml_config) == {"one": 1}


METRICS_LOG = """
import json
import threading

GATE = threading.Event()
SEEN = []


def write_metric(node_name, task_name, metric_name, metric, round_number):
    GATE.wait()
    SEEN.append((node_name, task_name, metric_name, metric, round_number))
"""


def test_log_metric_callback_calls_the_workspace_function_with_each_metric_off_the_lock(tmp_path: Path) -> None:
    import sys

    from accord.aggregator.sinks.plan_sinks import open_sinks
    from accord.metric_records import MetricRecord

    ws = copy_of("torch_mnist", tmp_path)
    (ws / "src" / "metrics_log.py").write_text(METRICS_LOG)
    plan = load_plan(ws / "plan" / "plan.yaml", {"aggregator.settings.log_metric_callback": "src.metrics_log.write_metric"})
    assert "src.metrics_log" not in sys.modules  # loading the plan imports no workspace code
    sinks = open_sinks(plan)
    try:
        module = sys.modules["src.metrics_log"]
        assert Path(module.__file__).resolve() == (ws / "src" / "metrics_log.py").resolve()
        records = [
            MetricRecord(1, "collaborator1", "aggregated_model_validation", "accuracy", 0.5),
            MetricRecord(1, "aggregator", "aggregated_model_validation", "accuracy", 0.75),
        ]
        for sink in sinks.records:
            sink(records)  # returns while the function is still blocked: it runs on the sink's thread
        assert module.SEEN == []
        module.GATE.set()
    finally:
        sinks.close(True)
    assert module.SEEN == [
        ("collaborator1", "aggregated_model_validation", "accuracy", 0.5, 1),
        ("aggregator", "aggregated_model_validation", "accuracy", 0.75, 1),
    ]


def test_a_metrics_callback_names_only_a_workspace_function(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from accord.aggregator.sinks.plan_sinks import open_sinks

    ws = copy_of("torch_mnist", tmp_path)
    assert main(["plan", "print", "-w", str(ws), "-o", "aggregator.settings.metrics.callback.template=os.system"]) == 2
    assert "src.module.function" in capsys.readouterr().err
    plan = load_plan(ws / "plan" / "plan.yaml", {"aggregator.settings.metrics.callback": {"template": "src.nothere.f"}})
    with pytest.raises(PlanError, match="not a file of the workspace's src package"):
        open_sinks(plan)
    (ws / "src" / "metrics_log.py").write_text("class write_metric:\n    pass\n")
    plan = load_plan(
        ws / "plan" / "plan.yaml", {"aggregator.settings.metrics.callback": {"template": "src.metrics_log.write_metric"}}
    )
    with pytest.raises(PlanError, match="is not a function"):
        open_sinks(plan)
    # a function the workspace's module only imported is not the workspace's code
    (ws / "src" / "borrowed.py").write_text("from os import system, execl\n")
    for name in ("system", "execl"):
        template = f"src.borrowed.{name}"
        plan = load_plan(ws / "plan" / "plan.yaml", {"aggregator.settings.metrics.callback": {"template": template}})
        with pytest.raises(PlanError, match=rf"{name} is defined in (posix|os|nt), not in src\.borrowed"):
            open_sinks(plan)


@pytest.mark.parametrize("settings", [{"straggler_cutoff_time": float("inf"), "minimum_reporting": 1}, {}])
def test_a_cutoff_policy_with_no_finite_cutoff_waits_for_all_as_openfl_does(settings: dict[str, object], tmp_path: Path) -> None:
    """OpenFL's CutoffTimePolicy defaults to an infinite cut-off, so it waits for every site."""
    ws = copy_of("torch_mnist", tmp_path)
    policy = {"template": "openfl.component.CutoffTimePolicy", "settings": settings}
    plan = load_plan(ws / "plan" / "plan.yaml", {"straggler_handling_policy": policy})
    stragglers = plan.model.straggler_handling_policy.settings
    assert (stragglers.policy, stragglers.cutoff_seconds, stragglers.min_reports) == ("wait_for_all", None, 1)
    assert any("wait_for_all" in note.line() for note in plan.openfl_notes)
