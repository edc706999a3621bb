"""The Dagster UI in a real headless browser (slow): `scripts/dagster_dev.sh` serves a real
`dagster dev` on a free 127.0.0.1 port (tmp DAGSTER_HOME, telemetry off, tiny profile);
Debian chromium, driven by Playwright, sees the asset graph with every stage, launches a
materialization of the whole chain and sees the run succeed."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from flame_pipeline.pipeline import STAGES

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_TIMEOUT_S = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"dagster dev did not serve {url} in {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.fixture
def dagster_ui(tmp_path):
    """A project directory with the shipped script and config, served by `dagster dev`."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: `bash scripts/setup.sh --tests` installs Debian chromium")
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("dagster.yaml", "workspace.yaml", "params.yaml", "dvc.yaml"):
        shutil.copy2(REPO / name, project / name)
    shutil.copy2(REPO / "scripts" / "dagster_dev.sh", project / "scripts" / "dagster_dev.sh")
    (project / ".venv").symlink_to(REPO / ".venv")
    home = tmp_path / "dagster_home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster_dev.log"
    env = dict(os.environ, DAGSTER_HOME=str(home), FLAME_PROFILE="tiny", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "scripts/dagster_dev.sh", "--port", str(port)],
                                cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for_server(url, proc, log)
        yield url, project, home, log
    finally:  # stop the process group this fixture started: Ctrl-C, then kill
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_ui_shows_the_chain_and_materializes_the_tiny_profile(dagster_ui):
    from playwright.sync_api import expect, sync_playwright

    url, project, home, log = dagster_ui
    assert "enabled: false" in (home / "dagster.yaml").read_text()  # telemetry off
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{url}/asset-groups", wait_until="networkidle", timeout=120_000)
            nodes = page.locator("svg foreignObject")  # the graph's nodes
            expect(nodes).to_have_count(len(STAGES), timeout=60_000)
            names = {t.strip() for t in nodes.all_text_contents()}
            assert names == set(STAGES), names  # one graph node per stage
            assert page.locator("svg path").count() >= len(STAGES)  # the edges between them

            page.get_by_role("button", name="Materialize all").click()
            run_link = page.locator("a[href*='/runs/']").first
            run_link.wait_for(timeout=60_000)  # the "run started" toast links to the run
            page.goto(url + run_link.get_attribute("href"), wait_until="domcontentloaded")
            status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
            status.wait_for(timeout=RUN_TIMEOUT_S * 1000)
            page.screenshot(path=str(log.with_suffix(".png")))
            assert status.inner_text() == "Success", log.read_text()[-4000:]

            # the materialized assets show in the catalog with their metadata
            page.goto(f"{url}/assets/download", wait_until="networkidle")
            for key in ("rows/manifest", "hashes", "dvc_outs"):
                page.get_by_text(key, exact=True).first.wait_for(timeout=30_000)
        finally:
            browser.close()
    assert (project / "data" / "tiny" / "eval" / "metrics.json").exists()
    assert not (home / "logs" / "event.log").exists()  # Dagster's telemetry log: never written
