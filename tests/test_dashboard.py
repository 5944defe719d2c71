"""The dashboard in a real headless browser (Debian's chromium, driven by
Selenium through chromedriver), against a real `p2pmr run`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from .helpers import copy_into, gutenberg_files
from .test_status import start_run, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("the dashboard tests need Debian's chromium and chromium-driver "
                    "(scripts/test.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Lines:
    """A process's stderr, read as it comes, so its first lines can be waited for."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    def url(self) -> str | None:
        for line in self.lines:
            found = re.match(r"dashboard: (http://\S+)", line)
            if found:
                return found.group(1)
        return None


def read_page(driver: webdriver.Chrome) -> dict[str, str]:
    ids = ("state", "map-complete", "map-total", "reduce-complete", "reduce-total",
           "output", "connection")
    return {name: driver.find_element(By.ID, name).text for name in ids}


def test_the_dashboard_follows_a_job_live_in_a_browser(tmp_path: Path,
                                                       browser: webdriver.Chrome) -> None:
    repo = tmp_path / "repo"
    data = copy_into(tmp_path / "in", gutenberg_files()[:4])
    run = start_run(repo, data, "--dashboard", "127.0.0.1:0", pace=0.6)
    try:
        err = Lines(run.stderr)
        url = wait_for(err.url, 60, "the dashboard's address")
        browser.get(url)
        seen: list[dict[str, str]] = []

        def ended() -> bool:
            seen.append(read_page(browser))
            return seen[-1]["state"] in ("done", "failed")

        wait_for(ended, 120, "the page to show the job's end")
        out = run.communicate(timeout=60)[0]
        assert run.returncode == 0, "".join(err.lines)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    final = seen[-1]
    assert final["state"] == "done", "".join(err.lines)
    assert final["map-complete"] == final["map-total"] != "0"
    assert final["reduce-complete"] == final["reduce-total"] == "2"
    assert final["output"] == out.strip().splitlines()[-1]
    progress = [int(page["map-complete"]) for page in seen if page["map-complete"].isdigit()]
    assert len(set(progress)) >= 3 and progress == sorted(progress), progress
    # A lane per peer, a bar per attempt, a row per peer.
    lanes = browser.find_elements(By.CSS_SELECTOR, "#stream text")
    bars = browser.find_elements(By.CSS_SELECTOR, "#stream rect.attempt.completed")
    assert len(lanes) == 2 and len(bars) == int(final["map-total"]) + 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "#peers tbody tr")) == 2
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("P2PMR_DASHBOARD_SCREENSHOT"):  # how the README's picture is made
        shutil.copy(shot, os.environ["P2PMR_DASHBOARD_SCREENSHOT"])

    # `p2pmr dashboard` serves the same page for the finished job, from its files.
    served = subprocess.Popen(
        [sys.executable, "-m", "p2pmr", "dashboard", "--repo", str(repo), "--bind",
         "127.0.0.1:0"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        url = wait_for(Lines(served.stderr).url, 60, "the dashboard's address")
        browser.get(url)
        wait_for(lambda: read_page(browser)["state"] == "done", 30, "the finished job's page")
        again = read_page(browser)
        assert {k: again[k] for k in ("map-complete", "map-total", "reduce-complete",
                                       "output")} == \
            {k: final[k] for k in ("map-complete", "map-total", "reduce-complete", "output")}
        assert len(browser.find_elements(By.CSS_SELECTOR, "#stream rect.attempt")) == len(bars)
    finally:
        served.send_signal(signal.SIGINT)
        assert served.wait(20) == 0
