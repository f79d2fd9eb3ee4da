"""The aggregator's memory is flat in the number of sites: at N = 32 real collaborators (over
mutual TLS, separate processes) of a 32 MB model, its peak for the round stays within its
baseline plus 3x the model (bench/fedavg_memory.py --light, which this runs: the aggregator
is ``start_aggregator`` in a process of its own, measured by VmHWM after clear_refs; the
sites are real clients, 8 to a process, uploading one memory-mapped update)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[1] / "bench" / "fedavg_memory.py"


def test_the_aggregators_peak_for_a_round_of_32_sites_stays_within_its_baseline_plus_3x_the_model() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--light", "--size-mb", "32", "--collaborators", "32", "--within", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    row = re.search(r"N =  32: model (\d+) MB, baseline (\d+) MB, peak increase (\d+) MB = ([\d.]+)x", done.stdout)
    assert row is not None, done.stdout + done.stderr
    assert float(row.group(4)) <= 3.0, done.stdout
    assert "results exact: OK" in done.stdout  # every upload arrived exactly; the last model is their mean
    assert done.returncode == 0, done.stdout + done.stderr
