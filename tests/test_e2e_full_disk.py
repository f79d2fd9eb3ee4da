"""A full disk under the aggregator's state directory (a real tmpfs, mounted for the test):
staging a result fails with ENOSPC, the site is refused "busy", waits and sends it again; the
aggregator keeps serving and, once there is room, loses nothing."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from conftest import FAST
from test_e2e_faults import Sites, wait_for

from accord.aggregator.saved import read_snapshot
from accord.experiment.local import prepare_workspace
from accord.metric_records import read_metrics

pytestmark = pytest.mark.e2e

PAGE = 4096


@pytest.fixture
def small_disk():
    """Mounts a 1 MiB tmpfs on a folder (needs root; skipped where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(mount_point: Path) -> Path:
        mount_point.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(mount_point)
        return mount_point

    try:
        yield mount
    finally:
        for mount_point in mounted:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` until only ``leave`` bytes (whole pages) remain free."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * PAGE)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    size = filler.stat().st_size // PAGE * PAGE
    os.truncate(filler, size - leave)
    return filler


def test_a_full_disk_while_staging_a_result_is_a_retryable_refusal(tmp_path: Path, small_disk) -> None:
    plan = prepare_workspace(tmp_path / "ws", 2, 2, overrides=FAST)
    small_disk = small_disk(plan.resolve_path(plan.model.aggregator.settings.state_dir))  # inside the workspace
    sites = Sites(plan)
    try:
        sites.start("aggregator")
        wait_for(lambda: (small_disk / "snapshot-00000.json").is_file(), what="round 0 to be saved")
        model_bytes = (small_disk / "model-00000.safetensors").stat().st_size
        assert model_bytes > 2 * PAGE  # a result does not fit in what is left; a journal record does
        filler = fill(small_disk, leave=2 * PAGE)
        sites.start("collaborator1")
        sites.start("collaborator2")
        wait_for(lambda: "cannot save the train result" in sites.log("aggregator"), what="a refused staging")
        wait_for(lambda: "cannot take it now" in sites.log("collaborator1") + sites.log("collaborator2"), what="a site to wait")
        assert read_snapshot(small_disk / "snapshot-00000.json")["round"] == 0 and not list(small_disk.glob("snapshot-00001*"))
        assert all(p.poll() is None for p in sites.procs.values())  # nobody exited
        filler.unlink()  # the operator frees space: the sites' next attempts go through
        codes = sites.wait_all()
    finally:
        sites.close()
    log = sites.log("aggregator")
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0}, log
    assert "No space left on device" in log and "refused for now, the site will send it again" in log
    sites_log = sites.log("collaborator1") + sites.log("collaborator2")
    assert "the aggregator cannot save this result now (No space left on device)" in sites_log
    assert str(small_disk) not in sites_log  # the aggregator's paths stay in its own log
    records = read_metrics(plan.resolve_path("logs/metrics.jsonl"))
    assert [r.round for r in records if r.metric == "round_seconds"] == [0, 1, 2]
    trained = {(r.round, r.origin) for r in records if r.task == "train" and r.origin != "aggregator"}
    assert trained == {(n, c) for n in (0, 1) for c in ("collaborator1", "collaborator2")}  # nothing lost
    assert not list(small_disk.glob(".*.tmp"))  # no half-written file left behind
