"""A site's own report of its work, its transfers' byte counts and bars, the stop signals, and
the resume commands the CLI suggests: the parts, each on its own (the processes together:
tests/test_e2e_site_console.py)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from accord.cli.resume import resume_command
from accord.collaborator.site_report import SiteReport
from accord.collaborator.transfers import Transfers, shown_bytes
from accord.messages import TaskResult
from accord.metric_records import MetricsLog, read_metrics
from accord.stop_signals import Stopped, StopRequest, stop_signals


def test_a_site_reports_each_task_and_round_with_its_traffic(tmp_path: Path, caplog) -> None:
    now = [100.0]
    transfers = Transfers(tty=False)
    report = SiteReport("hospital1", transfers, MetricsLog(tmp_path / "site.jsonl"), clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="accord.collaborator")
    transfers("download", 5000)  # before the round: not this round's
    report.round_started()
    transfers("download", 41_600)
    report.task_done(TaskResult("hospital1", 3, "train", 719, {"loss": 0.25, "accuracy": 0.9}, task_seconds=0.5))
    transfers("upload", 1_200_000)
    now[0] += 2.5
    report.round_done(3)
    assert "hospital1: round 3  train" in caplog.text and "accuracy=0.9000  loss=0.2500  (n=719, 0.50s)" in caplog.text
    assert "hospital1: round 3 done here: 1 task in 2.50s, 41.6 KB down, 1.2 MB up" in caplog.text
    figures = {(r.round, r.origin, r.task, r.metric): r.value for r in read_metrics(tmp_path / "site.jsonl")}
    assert figures == {
        (3, "hospital1", "train", "loss"): 0.25,
        (3, "hospital1", "train", "accuracy"): 0.9,
        (3, "hospital1", "train", "sample_count"): 719.0,
        (3, "hospital1", "train", "task_seconds"): 0.5,
        (3, "hospital1", "round", "round_seconds"): 2.5,
        (3, "hospital1", "round", "bytes_down"): 41_600.0,
        (3, "hospital1", "round", "bytes_up"): 1_200_000.0,
    }


def test_bytes_are_shown_for_people() -> None:
    assert [shown_bytes(n) for n in (0, 812, 25_900, 1_234_567, 12e9)] == ["0 B", "812 B", "25.9 KB", "1.2 MB", "12.0 GB"]


def test_a_transfer_is_shown_by_a_bar_on_a_terminal_and_by_two_lines_elsewhere_only_when_large(caplog) -> None:
    caplog.set_level(logging.INFO, logger="accord.collaborator")
    quiet = Transfers(tty=False, large_bytes=1000)
    with quiet.shown("round 1: receiving the global model", 999):  # small: nothing said
        quiet("download", 999)
    assert caplog.text == ""
    with quiet.shown("round 1: sending the train result", 5000):
        quiet("upload", 3000)
    assert "round 1: sending the train result: up to 5.0 KB ..." in caplog.text
    assert "round 1: sending the train result: 3.0 KB in" in caplog.text
    assert (quiet.down, quiet.up) == (999, 3000)

    caplog.clear()
    terminal = Transfers(tty=True, bar_bytes=1000, large_bytes=1000)
    with terminal.shown("round 1: receiving the global model", 4000):
        assert terminal._advance is not None  # the bar takes each chunk as it is counted
        for _ in range(4):
            terminal("download", 1000)
    assert terminal._advance is None and terminal.down == 4000
    assert caplog.text == ""  # a bar, not lines


@pytest.mark.parametrize("task", ["train[/x]", "train[bold", "train{0}", "train{task.total}"])
def test_a_task_name_on_the_bar_is_shown_as_it_is_never_read_as_markup(task: str) -> None:
    terminal = Transfers(tty=True, bar_bytes=1000, large_bytes=1000)
    with terminal.shown(f"round 1: sending the {task} result", 2000):
        terminal("upload", 2000)
    assert terminal.up == 2000 and terminal._advance is None


def test_a_stop_signal_raises_stopped_with_its_exit_code() -> None:
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or what an earlier test's library (Ray) installed
    with pytest.raises(Stopped) as stopped, stop_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in the main thread before this ends
    assert (stopped.value.signal_name, stopped.value.exit_code) == ("SIGTERM", 143)
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


def test_a_first_signal_asks_to_stop_and_a_second_stops_at_once() -> None:
    request = StopRequest()
    with stop_signals(request):
        os.kill(os.getpid(), signal.SIGINT)
        assert request.event.wait(5) and request.signum == signal.SIGINT
        with pytest.raises(Stopped) as stopped:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert stopped.value.exit_code == 130


def test_the_resume_command_repeats_what_changes_the_plan_hash() -> None:
    assert resume_command("aggregator start", Path("agg"), "plan/plan.yaml", ()) == "fx aggregator start -w agg"
    command = resume_command("collaborator start", Path("my site"), "plan/other.yaml", ("a.b=1",), "-n", "h1")
    assert command == "fx collaborator start -n h1 -w 'my site' -p plan/other.yaml -o a.b=1"


def test_outside_the_main_thread_the_signals_are_left_alone() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def inside() -> None:
        with stop_signals():
            seen.append(signal.getsignal(signal.SIGTERM))

    worker = threading.Thread(target=inside)
    worker.start()
    worker.join()
    assert seen == [before]
