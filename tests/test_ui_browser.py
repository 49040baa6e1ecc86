"""The Dagster UI in a real browser: Debian's Chromium driven by Playwright (no browser download).

Runs against the webserver of ``dagster_services`` (``deploy/serve.py`` on Postgres and the
GCS emulator) and checks what an operator looks at: the episode assets in the asset graph,
an episode's partition page with its metadata (seconds removed, loudness), and the purge
schedule among the automations. Screenshots go to ``$POD_SCREENSHOT_DIR`` when set (the
README's come from ``POD_SCREENSHOT_DIR=docs/images``), else to the test's tmp dir.

Without Chromium or Playwright the test is skipped, or fails when ``POD_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from pod_assets import layout
from pod_audio.io import iter_blocks
from tests import audio_factory as af
from tests.plugins.dagster_services import DagsterServices

CHROMIUM = os.environ.get("POD_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 900}
PAGE_TIMEOUT_S = 90.0


def _unavailable(reason: str):
    if os.environ.get("POD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"browser required (POD_REQUIRE_SERVICES=1) but unavailable: {reason}")
    pytest.skip(f"browser unavailable: {reason}")


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """Chromium from the system, launched headless by Playwright."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed ({exc})")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as exc:
            _unavailable(f"cannot launch {CHROMIUM}: {exc}")
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("POD_SCREENSHOT_DIR") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _finished_partition(instance: dg.DagsterInstance) -> str | None:
    """A partition with a final episode, preferring one whose cleaning removed a pause."""
    finals = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("final_episode")), limit=50, ascending=False
    ).records
    finished = [r.partition_key for r in finals]
    if not finished:
        return None
    cleaned = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("cleaned_audio"), asset_partitions=finished),
        limit=200,
        ascending=False,
    ).records
    latest: dict[str, dg.EventLogRecord] = {}
    for record in cleaned:
        latest.setdefault(record.partition_key, record)
    for partition in finished:
        record = latest.get(partition)
        if record and record.asset_materialization.metadata["pauses_removed_s"].value > 0:
            return partition
    return finished[0]


@pytest.fixture
def processed_episode(dagster_services: DagsterServices, gcs_emulator_env, jfk_path, tmp_path) -> str:
    """An episode the daemon has processed: one from an earlier test, or a new upload."""
    with dagster_services.instance() as instance:
        if episode_id := _finished_partition(instance):
            return episode_id
        speech = np.concatenate(list(iter_blocks(jfk_path, sample_rate=44100, channels=2)))
        clip = af.concat(
            speech[int(0.3 * 44100) : int(1.6 * 44100)],
            af.silence(duration_s=1.3, sample_rate=44100, channels=2),
            speech[int(2.8 * 44100) : int(4.1 * 44100)],
        )
        path = af.write_audio(tmp_path / "browser check.flac", clip, sample_rate=44100)
        dagster_services.store.write_file(layout.upload_key(path.name), path)
        return dagster_services.wait_until(
            "the upload processed by the daemon",
            lambda: _finished_partition(instance),
            timeout_s=240,
            interval_s=2.0,
        )


class UI:
    """One browser page on the webserver, with the waits the UI needs."""

    def __init__(self, page, base_url: str, screenshots: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.screenshots = screenshots

    def open(self, path: str) -> None:
        self.page.goto(self.base_url + path, wait_until="domcontentloaded")

    def dismiss_welcome(self, *, wait_s: float = 0.0) -> None:
        """A fresh browser profile is first asked to join the Dagster community: skip it."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        skip = self.page.get_by_role("button", name="Skip").first
        try:
            if wait_s:
                skip.wait_for(state="visible", timeout=wait_s * 1000)
            if skip.is_visible():
                skip.click()
                skip.wait_for(state="hidden", timeout=10_000)
        except PlaywrightTimeout:
            pass

    def text_once(self, *needles: str, timeout_s: float = PAGE_TIMEOUT_S) -> str:
        """The page's text once every needle is in it; fails with a screenshot otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.dismiss_welcome()
            body = self.page.inner_text("body")
            missing = [n for n in needles if n not in body]
            if not missing:
                return body
            if time.monotonic() > deadline:
                shot = self.shot("failure")
                pytest.fail(
                    f"{self.page.url}: {missing} not shown after {timeout_s:.0f} s "
                    f"(screenshot {shot})\n--- page text ---\n{body[:3000]}",
                    pytrace=False,
                )
            self.page.wait_for_timeout(500)

    def shot(self, name: str) -> Path:
        self.dismiss_welcome()
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.gcs
def test_operator_sees_assets_episode_metadata_and_purge_schedule(
    browser, dagster_services: DagsterServices, processed_episode: str, screenshots: Path
):
    services = dagster_services
    with services.instance() as instance:
        cleaned = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("cleaned_audio"), asset_partitions=[processed_episode]),
            limit=1,
            ascending=False,
        ).records[0].asset_materialization.metadata
        final = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("final_episode"), asset_partitions=[processed_episode]),
            limit=1,
            ascending=False,
        ).records[0].asset_materialization.metadata

    context = browser.new_context(viewport=VIEWPORT)
    try:
        ui = UI(context.new_page(), services.url, screenshots)

        # The asset graph of the episodes group: the four assets, each partitioned by episode.
        ui.open(f"/locations/{services.location_name}/asset-groups/episodes")
        ui.text_once("raw_audio", "transcript", "cleaned_audio", "final_episode", "Partitions")
        ui.dismiss_welcome(wait_s=10)  # it opens a moment after the first page
        ui.page.wait_for_timeout(1000)  # let the graph finish its layout
        ui.shot("asset-graph")

        # An episode's partition of cleaned_audio: what cleaning removed, with which settings.
        ui.open(f"/assets/cleaned_audio?view=partitions&partition={processed_episode}")
        body = ui.text_once(
            processed_episode, "Metadata", "pauses_removed_s", "silence_trimmed_s", "fillers_removed", "settings"
        )
        assert f"{cleaned['pauses_removed_s'].value:g}" in body
        ui.shot("episode-cleaned-audio")

        # The same episode's final_episode: loudness before and after, true peak.
        ui.open(f"/assets/final_episode?view=partitions&partition={processed_episode}")
        body = ui.text_once(processed_episode, "Metadata", "loudness_out_lufs", "true_peak_dbtp")
        assert f"{final['loudness_out_lufs'].value:g}" in body
        assert f"{final['true_peak_dbtp'].value:g}" in body
        ui.shot("episode-final")

        # The automations: the purge schedule next to the sensors, all switched on.
        ui.open("/automation")
        ui.text_once("purge_schedule", "purge_sensor", "upload_sensor", "episode_run_failure_sensor")
        ui.shot("automation")
    finally:
        context.close()
