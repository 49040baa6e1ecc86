"""The Dagster UI in Debian's Chromium, driven by Playwright (no browser download).

- ``playwright`` (session): one Playwright driver for the whole session; every browser test
  module launches its Chromium from it (:func:`launch_chromium`), since a second sync driver
  cannot start beside the first in one thread.
- :class:`UI`: one browser page on a webserver, with the waits the UI needs, and the steps of
  docs/operations.md's reprocess procedure ("One episode"), click by click.
- ``screenshots``: where pictures go: ``$POD_SCREENSHOT_DIR`` when set (the README's come from
  ``POD_SCREENSHOT_DIR=docs/images``), else the test's tmp dir.
- :func:`write_clip_with_a_pause`: the episode the browser tests look at;
  :func:`latest_metadata`: what its partition pages show, read from the instance.

Without Chromium or Playwright a browser test is skipped, or fails when
``POD_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg
import pytest

from tests import audio_factory as af

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
_RELOAD_EVERY_S = 20.0
"""While waiting for text, the page is loaded again this often."""
CLIP_SAMPLE_RATE = 44100
CLIP_PAUSE_S = 1.3
"""The pause in :func:`write_clip_with_a_pause`: cut at the default ``max_pause_ms`` (700),
kept at 1500."""


def browser_unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when ``POD_REQUIRE_SERVICES=1``."""
    if os.environ.get("POD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"browser required (POD_REQUIRE_SERVICES=1) but unavailable: {reason}")
    pytest.skip(f"browser unavailable: {reason}")


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    """The session's Playwright driver (sync API)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        browser_unavailable(f"playwright is not installed ({exc})")
    with sync_playwright() as driver:
        yield driver


def launch_chromium(playwright: Any, *extra_args: str) -> Any:
    """The system's Chromium, headless, with :data:`CHROMIUM_ARGS` and ``extra_args``."""
    from playwright.sync_api import Error

    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        browser_unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        return playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])
    except Error as exc:
        browser_unavailable(f"cannot launch {CHROMIUM}: {exc}")


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("POD_SCREENSHOT_DIR") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def write_clip_with_a_pause(path: Path) -> Path:
    """3.9 s of the JFK sample: speech, a :data:`CLIP_PAUSE_S` pause, speech (FLAC, stereo)."""
    rate = CLIP_SAMPLE_RATE
    speech = af.read_audio(af.jfk_path(), sample_rate=rate, channels=2)
    clip = af.concat(
        speech[int(0.3 * rate) : int(1.6 * rate)],
        af.silence(duration_s=CLIP_PAUSE_S, sample_rate=rate, channels=2),
        speech[int(2.8 * rate) : int(4.1 * rate)],
    )
    return af.write_audio(path, clip, sample_rate=rate)


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict:
    """The metadata a partition page shows: the partition's latest materialization's."""
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
        limit=1,
        ascending=False,
    ).records[0].asset_materialization.metadata


class UI:
    """One browser page on the webserver, with the waits the UI needs."""

    def __init__(self, page, base_url: str, screenshots: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.screenshots = screenshots
        self.welcome_skipped = False

    def open(self, path: str) -> None:
        self.page.goto(self.base_url + path, wait_until="domcontentloaded")

    def dismiss_welcome(self, *, wait_s: float = 0.0) -> None:
        """A fresh browser profile is first asked to join the Dagster community: skip it,
        waiting up to ``wait_s`` for the question unless it was skipped already."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        skip = self.page.get_by_role("button", name="Skip").first
        try:
            if wait_s and not self.welcome_skipped:
                skip.wait_for(state="visible", timeout=wait_s * 1000)
            if skip.is_visible():
                skip.click()
                skip.wait_for(state="hidden", timeout=10_000)
                self.welcome_skipped = True
        except PlaywrightTimeout:
            pass

    def text_once(
        self, *needles: str, timeout_s: float = PAGE_TIMEOUT_S, reload: bool = False
    ) -> str:
        """The page's text once every needle is in it; fails with a screenshot otherwise.
        With ``reload``, the page is loaded again every 20 s while waiting (for what a
        sensor reports after the page loaded; never while a dialog is open)."""
        deadline = time.monotonic() + timeout_s
        reload_at = time.monotonic() + _RELOAD_EVERY_S
        while True:
            self.dismiss_welcome()
            body = self.page.inner_text("body")
            missing = [n for n in needles if n not in body]
            if not missing:
                return body
            if reload and time.monotonic() > reload_at:
                # What a sensor reported after the page loaded (the episode's catalog status)
                # shows after a reload, as an operator would press F5.
                self.page.reload(wait_until="domcontentloaded")
                reload_at = time.monotonic() + _RELOAD_EVERY_S
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

    def follow(self, text: str) -> None:
        """Click the link that reads ``text`` (an item of the left bar, an asset's name)."""
        self.page.locator("a", has=self.page.get_by_text(text, exact=True)).first.click()

    def open_catalog(self) -> None:
        """**Catalog** in the left bar, from any page of the UI."""
        self.text_once("Catalog")
        self.dismiss_welcome(wait_s=5)  # it opens a moment after the first page
        self.follow("Catalog")

    def open_partition(self, asset: str, partition: str) -> str:
        """**Catalog → asset → Partitions →** the partition; the page's text once its
        metadata shows."""
        self.open_catalog()
        self.follow(asset)
        self.page.get_by_role("tab", name="Partitions").click()
        self.page.get_by_text(partition, exact=True).first.click()
        return self.text_once(partition, "Metadata")

    def edit_picture_size(self) -> list[int]:
        """On a ``final_episode`` partition page: open ``edit_image`` (**[Show Markdown]**) and
        return the picture's ``[width, height]`` in pixels (left open for a screenshot)."""
        self.page.get_by_text("[Show Markdown]").first.click()
        picture = self.page.locator("img[src^='data:image/png;base64,']").first
        picture.wait_for(state="visible", timeout=30_000)
        return picture.evaluate("i => [i.naturalWidth, i.naturalHeight]")

    # ------------------------------------------------ docs/operations.md, "One episode"
    def open_launchpad(self, *assets: str) -> None:
        """Steps 1–3: **Catalog** in the left bar, tick ``assets``, the **▾** beside
        **Materialize selected**, **Open launchpad**. From any page of the UI."""
        self.open_catalog()
        self.text_once(*assets, "Materialize selected")
        for name in assets:
            self.page.get_by_test_id(f"checkbox-{name}").locator("xpath=..").click()
        self.text_once(f"Materialize selected ({len(assets)})")
        self.page.locator("button:has([aria-label=arrow_drop_down])").first.click()
        self.page.get_by_role("menuitem", name="Open launchpad").click()

    def pick_partition(self, episode_id: str) -> None:
        """Step 4: type the start of the episode id into **Partition**, pick it from the list;
        the line under the field then reads ``partition: <episode id>``. The list comes from
        the server after the typing; typed again if it did not come."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        partition = self.page.get_by_placeholder("Partition")
        choice = self.page.get_by_role("menuitem", name=episode_id)
        for attempt in range(3):
            partition.fill("")
            partition.press_sequentially(episode_id[:16], delay=30)
            try:
                choice.click(timeout=20_000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
        self.text_once(f"partition: {episode_id}")

    def change_setting(self, name: str, old: object, new: object) -> None:
        """Step 5: line ``name: old`` of the run config becomes ``name: new``; **ERRORS**
        reads *No errors*."""
        self.page.locator(".CodeMirror-line", has_text=f"{name}: {old}").click()
        self.page.keyboard.press("End")
        for _ in str(old):
            self.page.keyboard.press("Backspace")
        self.page.keyboard.type(str(new))
        self.text_once(f"{name}: {new}", "No errors")

    def materialize(self) -> None:
        """Step 6: **Materialize** (bottom right of the launchpad)."""
        self.page.get_by_role("dialog").get_by_role("button", name="Materialize").click()
