"""The Dagster UI in a real browser: Debian's Chromium driven by Playwright (no browser download).

Runs against the webserver of ``dagster_services`` (``deploy/serve.py`` on Postgres and the
GCS emulator) and checks what an operator looks at: the episode assets in the asset graph,
an episode's partition page with its metadata (seconds removed, loudness) and catalog status,
the purge schedule among the automations, listening to the final MP3 from its link, the edit
as a picture, and the reprocess procedure of docs/operations.md followed click by click.
Screenshots go to ``$POD_SCREENSHOT_DIR`` when set (the README's come from
``POD_SCREENSHOT_DIR=docs/images``), else to the test's tmp dir. The browser, the page helpers
and the procedure's steps are in ``tests/plugins/browser.py``; ``tests/pipeline/test_ui_embedded.py``
walks the same path on the embedded default (``make ui``).

The episodes' links are the bucket's public URLs (``http://storage.googleapis.com/<bucket>/…``,
the show's ``public_base_url``); Chromium resolves that host to the emulator.

Without Chromium or Playwright the test is skipped, or fails when ``POD_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from pod_assets import layout
from tests.plugins.browser import UI, VIEWPORT, latest_metadata, launch_chromium, write_clip_with_a_pause
from tests.plugins.dagster_services import PUBLIC_GCS_HOST, DagsterServices, public_gcs_url
from tests.plugins.gcs import GCSEmulator

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.gcs]


@pytest.fixture(scope="session")
def browser(playwright, gcs_emulator: GCSEmulator) -> Iterator:
    """Chromium in which the public GCS host resolves to the emulator."""
    emulator = gcs_emulator.endpoint.removeprefix("http://")
    browser = launch_chromium(playwright, f"--host-resolver-rules=MAP {PUBLIC_GCS_HOST} {emulator}")
    try:
        yield browser
    finally:
        browser.close()


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
def processed_episode(dagster_services: DagsterServices, gcs_emulator_env, tmp_path) -> str:
    """An episode the daemon has processed: one from an earlier test, or a new upload."""
    with dagster_services.instance() as instance:
        if episode_id := _finished_partition(instance):
            return episode_id
        path = write_clip_with_a_pause(tmp_path / "browser check.flac")
        dagster_services.store.write_file(layout.upload_key(path.name), path)
        return dagster_services.wait_until(
            "the upload processed by the daemon",
            lambda: _finished_partition(instance),
            timeout_s=240,
            interval_s=2.0,
        )


def test_operator_sees_assets_episode_metadata_and_purge_schedule(
    browser, dagster_services: DagsterServices, processed_episode: str, screenshots: Path
):
    services = dagster_services
    with services.instance() as instance:
        cleaned = latest_metadata(instance, "cleaned_audio", processed_episode)
        final = latest_metadata(instance, "final_episode", processed_episode)

    context = browser.new_context(viewport=VIEWPORT)
    try:
        ui = UI(context.new_page(), services.url, screenshots)

        # The asset graph of the episodes group (zoomed out far enough to show only names
        # once it holds six assets; the partition pages below show the partitions).
        ui.open(f"/locations/{services.location_name}/asset-groups/episodes")
        ui.text_once("raw_audio", "transcript", "cleaned_audio", "final_episode")
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


def test_operator_listens_to_the_episode_and_sees_the_edit(
    browser, dagster_services: DagsterServices, processed_episode: str, screenshots: Path
):
    services = dagster_services
    key = layout.episode_key(processed_episode, layout.FINAL_EPISODE)
    link = f"{public_gcs_url(services.store.bucket)}prod/{key}"
    context = browser.new_context(viewport=VIEWPORT)
    try:
        ui = UI(context.new_page(), services.url, screenshots)
        ui.open(f"/assets/final_episode?view=partitions&partition={processed_episode}")
        # The catalog's word on the episode (episode_status_sensor) beside the step's metadata.
        ui.text_once(processed_episode, "episode_status", "processed", "title", "uploaded_at",
                     "final_episode_link", "edit_image", reload=True)
        assert ui.page.locator(f"a[href='{link}']").count() >= 1

        # The edit as a picture: the markdown metadata opens as an image.
        assert ui.edit_picture_size() == [1000, 300]
        ui.shot("edit-picture")
        ui.page.get_by_role("button", name="Close").click()

        # Listening: the link plays in the browser, as audio/mpeg.
        player = context.new_page()
        response = player.goto(link, wait_until="commit")
        assert response is not None and response.status == 200
        assert response.headers["content-type"] == "audio/mpeg"
        player.set_viewport_size({"width": 700, "height": 140})
        player.wait_for_timeout(1500)
        UI(player, services.url, screenshots).shot("listening")
    finally:
        context.close()


def test_reprocess_as_docs_operations_says(
    browser, dagster_services: DagsterServices, processed_episode: str, screenshots: Path
):
    """docs/operations.md, "One episode": Catalog → select cleaned_audio and final_episode →
    Materialize selected ▾ → Open launchpad → partition → run config → Materialize."""
    services = dagster_services
    with services.instance() as instance:
        before = {r.dagster_run.run_id for r in instance.get_run_records(
            dg.RunsFilter(tags={"dagster/partition": processed_episode}))}
    context = browser.new_context(viewport=VIEWPORT)
    try:
        ui = UI(context.new_page(), services.url, screenshots)
        ui.open("/")
        ui.open_launchpad("cleaned_audio", "final_episode")
        ui.pick_partition(processed_episode)
        ui.change_setting("max_pause_ms", 700, 1500)
        ui.shot("reprocess-launchpad")
        ui.materialize()

        def new_run_finished() -> dg.DagsterRun | None:
            records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": processed_episode}))
            runs = [r.dagster_run for r in records if r.dagster_run.run_id not in before]
            return runs[0] if runs and runs[0].is_finished else None

        with services.instance() as instance:
            run = services.wait_until("the reprocess run", new_run_finished, timeout_s=300, interval_s=2.0)
            assert run.status == dg.DagsterRunStatus.SUCCESS, services.logs()
            assert {k.path[-1] for k in run.asset_selection} == {"cleaned_audio", "final_episode"}
            cleaned = latest_metadata(instance, "cleaned_audio", processed_episode)
            assert cleaned["settings"].value["max_pause_ms"] == 1500
    finally:
        context.close()
