"""fx dashboard in a real headless Chromium (Debian's, driven by Selenium) while a real federation
runs: an aggregator and two collaborators as processes over mutual TLS. The page loads, shows
the round and who owes what (and who is late), a refused site, its aggregated curve gains a point
when a round closes, text from a site is shown as text, and a request without the token (or with
a wrong one) is refused.

Set ACCORD_DASHBOARD_SCREENSHOT=PATH to keep the screenshot there (docs/dashboard.png was made so).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from test_e2e_faults import Sites, slow_workspace, wait_for

from accord.aggregator.event_log import events_path
from accord.experiment.local import fx_command

pytestmark = pytest.mark.e2e

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1500",
)
#: a generous bound on waiting for a round (a busy machine), never asserted as a duration
ROUND_SECONDS = 300.0
#: what a site's failure report could say; the page must show it as text
HOSTILE = "<img src=x onerror=\"document.title='owned'\">"


def chromium(profile: Path) -> webdriver.Chrome:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def start_dashboard(workspace: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``fx dashboard`` on a free port; returns it and the URL it printed."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            fx_command("dashboard", "-w", str(workspace), "--port", "0"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    found: list[str] = []

    def printed() -> bool:
        assert proc.poll() is None, log.read_text()
        found[:] = re.findall(r"http://127\.0\.0\.1:\d+/\?token=[\w-]+", log.read_text())
        return bool(found)

    wait_for(printed, timeout=60, what="fx dashboard to print its URL")
    return proc, found[0]


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def text(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def points(driver: webdriver.Chrome) -> int:
    """The aggregated curve's points, as drawn."""
    return len(driver.find_elements(By.CSS_SELECTOR, "#curve circle.agg-point"))


def test_the_dashboard_follows_a_running_federation_in_chromium(tmp_path: Path) -> None:
    # the cut-off passes in round 1 (both sites wait for the gate) and the round waits on: they are late
    policy = {"policy": "cutoff_time", "cutoff_seconds": 2.0, "min_reports": 2, "round_deadline_seconds": 86400}
    plan = slow_workspace(tmp_path / "ws", 2, 3, **{"straggler_handling_policy.settings": policy})
    gate = tmp_path / "later-rounds-may-train"  # round 0 trains at once, later rounds once it exists
    sites = Sites(plan)
    dashboard, url = start_dashboard(plan.workspace, tmp_path / "dashboard.log")
    base = url.split("/?", 1)[0]
    token = url.split("token=", 1)[1]
    driver = chromium(tmp_path / "chromium-profile")
    try:
        driver.get(url)
        wait_for(lambda: text(driver, "badge") == "no round saved yet", timeout=60, what="the page before the aggregator starts")
        assert "holds no saved round" in text(driver, "round")
        assert driver.current_url == base + "/"  # the page took the token out of the address bar (and history)

        sites.start("aggregator")
        events = events_path(plan.resolve_path("logs/metrics.jsonl"))
        wait_for(events.is_file, what="the aggregator's events file")
        with events.open("a") as out:  # what a site's failure report would put there
            out.write(
                json.dumps({"at": 1, "kind": "result_failed", "round": 0, "collaborator": "collaborator2", "reason": HOSTILE})
                + "\n"
            )
        # a site whose plan differs is refused at join: the aggregator's refusal hook writes it
        other_plan = fx_command(
            "collaborator",
            "start",
            "-n",
            "collaborator1",
            "-w",
            str(plan.workspace),
            "-o",
            "aggregator.settings.rounds_to_train=9",
        )
        refused = subprocess.run(other_plan, capture_output=True, text=True, timeout=ROUND_SECONDS)
        assert refused.returncode == 2 and "the plans differ" in refused.stderr, refused.stderr
        wait_for(
            lambda: "refused a call: collaborator 'collaborator1' has plan hash" in text(driver, "events"),
            60,
            "the refusal on the page",
        )
        for name in ("collaborator1", "collaborator2"):
            sites.start(name, LATER_TRAINING_WAITS_FOR=str(gate))

        # round 0 closed; round 1 waits for both sites, whose training waits for the gate
        wait_for(
            lambda: text(driver, "round").startswith("round 1 of 3") and points(driver) == 1, ROUND_SECONDS, "round 1 on the page"
        )
        assert text(driver, "badge") == "running" and text(driver, "phase") == "train"
        assert "collaborator1 (" in text(driver, "owed") and "collaborator2 (" in text(driver, "owed")
        wait_for(lambda: text(driver, "owed-label") == "late", ROUND_SECONDS, "the sites shown late past the cut-off")
        assert driver.find_element(By.ID, "owed").get_attribute("class") == "late"
        assert "cutoff_time (at least 2 report(s), cut-off 2 s" in text(driver, "policy")
        assert driver.find_element(By.ID, "metric").get_attribute("value") == "aggregated_model_validation/accuracy"
        assert driver.find_element(By.ID, "curve").get_attribute("data-points") == "1"
        assert HOSTILE in text(driver, "events")  # shown as text, not run
        assert not driver.find_elements(By.TAG_NAME, "img") and driver.title == "Accord dashboard"
        assert "init.safetensors" in text(driver, "models")

        gate.touch()
        wait_for(lambda: points(driver) >= 2, ROUND_SECONDS, "the curve to gain round 1's point")
        assert text(driver, "error") == ""

        # the browser's own requests (its /favicon.ico) were never refused
        assert "refused a request" not in (tmp_path / "dashboard.log").read_text()
        # every request without the token, or with a wrong one, is refused; the right one is served
        for path in ("/", "/api/state"):
            assert status_of(base + path) == 401
            assert status_of(base + path + "?token=" + "x" * len(token)) == 403
            assert status_of(base + path, {"Authorization": "Bearer wrong"}) == 403
            assert status_of(base + path + "?token=" + token) == 200

        codes = sites.wait_all(timeout=2 * ROUND_SECONDS)
        assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0}, sites.log("aggregator")
        wait_for(lambda: text(driver, "badge") == "finished" and points(driver) == 4, 60, "the finished federation's page")
        assert "round closed" in text(driver, "events") and "last.safetensors" in text(driver, "models")
        shot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("ACCORD_DASHBOARD_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["ACCORD_DASHBOARD_SCREENSHOT"])
    finally:
        driver.quit()
        sites.close()
        dashboard.terminate()
        dashboard.wait(timeout=30)
