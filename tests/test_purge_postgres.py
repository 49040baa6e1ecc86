"""The purge against reprocessing, on real Postgres (row locks, separate connections) and the
GCS emulator: an episode that moves to ``processing`` while a purge runs keeps its raw
media, and one the purge has marked cannot move to ``processing``."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest
from pydantic import PrivateAttr

from pod_assets import layout
from pod_assets.purge import PurgeReport, execute_purge, plan_purge, purge
from pod_resources.catalog import Catalog, EpisodeStatus, RawMediaPurgedError
from pod_resources.storage import LocalObjectStore
from tests.test_purge import DAY, finished, has_raw_media, raw_objects, start, start_of_hour, upload

pytestmark = pytest.mark.postgres
S = EpisodeStatus


@pytest.fixture
def catalog(postgres_url: str) -> Catalog:
    return Catalog(postgres_url, application_name=f"pod-test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def store(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(root=str(tmp_path / "store"))


def _in_thread(call: Callable[[], object]) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_episode_moved_to_processing_between_selection_and_delete_keeps_its_raw_media(
    catalog, store, postgres_url
):
    t0 = start_of_hour()
    racing = finished(store, catalog, "racing.mp3", at=t0 - 2 * DAY)
    calm = finished(store, catalog, "calm.mp3", at=t0 - 2 * DAY)
    plan = plan_purge(catalog, store, now=t0, retention=DAY)
    assert {p.episode_id for p in plan.eligible} == {racing, calm}

    # A backfill run takes the episode, on its own connection, after the selection.
    thread, box = _in_thread(lambda: start(store, Catalog(postgres_url), racing, at=t0))
    thread.join(30)
    assert "error" not in box, box
    report = execute_purge(catalog, store, plan)

    assert [e.episode_id for e in report.deleted] == [calm]
    assert [s.episode_id for s in report.skipped_by_race] == [racing]
    assert raw_objects(store, racing) == [layout.raw_key(racing, "racing.mp3")]
    episode = catalog.get_episode(racing)
    assert (episode.status, episode.raw_purged_at) == (S.PROCESSING, None)


def test_purge_waits_for_a_reprocess_holding_the_row_and_then_skips_it(
    catalog, store, postgres_url
):
    t0 = start_of_hour()
    episode_id = finished(store, catalog, "show.mp3", at=t0 - 2 * DAY)
    plan = plan_purge(catalog, store, now=t0, retention=DAY)
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as reprocess:
        # The transaction of set_status(→ processing), caught between its lock and its commit.
        reprocess.execute(
            "SELECT status FROM episodes WHERE episode_id = %s FOR UPDATE", [episode_id]
        )
        reprocess.execute(
            "UPDATE episodes SET status = 'processing', status_changed_at = %s "
            "WHERE episode_id = %s",
            [t0, episode_id],
        )
        thread, box = _in_thread(lambda: execute_purge(catalog, store, plan))
        thread.join(1.0)
        assert thread.is_alive(), "the purge's mark must wait for the row lock"
        assert store.exists(layout.raw_key(episode_id, "show.mp3"))
        reprocess.commit()
    thread.join(30)
    report: PurgeReport = box["result"]
    assert report.deleted == () and [s.episode_id for s in report.skipped_by_race] == [episode_id]
    assert store.exists(layout.raw_key(episode_id, "show.mp3"))
    assert catalog.get_episode(episode_id).raw_purged_at is None


class _ReprocessOnFirstDelete(LocalObjectStore):
    """A real local store that, before its first delete, lets a reprocess run try its luck
    on another thread and connection (the window between the purge's mark and delete)."""

    _hook: Callable[[], None] | None = PrivateAttr(default=None)

    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()
        super().delete(key, if_generation_match=if_generation_match)


def test_a_reprocess_starting_after_the_mark_is_refused_and_changes_nothing(
    catalog, store, postgres_url
):
    t0 = start_of_hour()
    episode_id = finished(store, catalog, "show.mp3", at=t0 - 2 * DAY)
    before = catalog.history(episode_id)
    interleaved = _ReprocessOnFirstDelete(root=store.root)
    attempts: list[dict] = []

    def reprocess() -> None:
        thread, box = _in_thread(lambda: start(store, Catalog(postgres_url), episode_id, at=t0))
        thread.join(30)
        attempts.append(box)

    interleaved._hook = reprocess
    report = purge(catalog, interleaved, now=t0, retention=DAY)

    [attempt] = attempts
    assert isinstance(attempt.get("error"), RawMediaPurgedError), attempt
    assert f"raw audio for {episode_id} was purged at" in str(attempt["error"])
    assert [e.episode_id for e in report.deleted] == [episode_id]
    assert not has_raw_media(store, catalog, episode_id)
    episode = catalog.get_episode(episode_id)
    assert episode.status == S.PROCESSED and episode.raw_purged_at == t0
    assert catalog.history(episode_id) == before


def test_concurrent_purges_and_reprocessing_never_delete_bytes_of_a_processing_episode(
    catalog, store, postgres_url
):
    t0 = start_of_hour()
    ids = [finished(store, catalog, f"ep{i}.mp3", at=t0 - 2 * DAY) for i in range(8)]
    barrier = threading.Barrier(3)

    def purger() -> PurgeReport:
        own = Catalog(postgres_url)
        barrier.wait()
        return purge(own, store, now=t0, retention=DAY)

    def reprocessor() -> dict[str, str]:
        own = Catalog(postgres_url)
        outcome: dict[str, str] = {}
        barrier.wait()
        for episode_id in reversed(ids):
            try:
                start(store, own, episode_id, at=t0)
                outcome[episode_id] = "processing"
            except RawMediaPurgedError:
                outcome[episode_id] = "refused"
        return outcome

    threads = [_in_thread(purger), _in_thread(purger), _in_thread(reprocessor)]
    for thread, _ in threads:
        thread.join(60)
    boxes = [box for _, box in threads]
    assert all("error" not in box for box in boxes), boxes
    reports: list[PurgeReport] = [boxes[0]["result"], boxes[1]["result"]]
    outcome: dict[str, str] = boxes[2]["result"]

    deleted = [e.episode_id for r in reports for e in r.deleted]
    assert len(deleted) == len(set(deleted))  # each episode purged once
    for report in reports:
        assert not report.failed
    for episode_id in ids:
        episode = catalog.get_episode(episode_id)
        if outcome[episode_id] == "processing":
            assert episode.status == S.PROCESSING and episode.raw_purged_at is None
            assert raw_objects(store, episode_id), episode_id
            assert episode_id not in deleted
        else:
            assert episode.status == S.PROCESSED and episode.raw_purged_at == t0
            assert not has_raw_media(store, catalog, episode_id)
            assert episode_id in deleted


@pytest.mark.gcs
def test_purge_on_gcs_deletes_raw_media_and_leftover_copies_only(catalog, gcs_store):
    t0 = start_of_hour()
    episode_id = upload(gcs_store, catalog, "show.mp3")
    assert catalog.set_status(
        episode_id, expected=S.UPLOADED, new=S.PROCESSING, run_id="r", at=t0 - 2 * DAY
    )
    raw_key = layout.raw_key(episode_id, "show.mp3")
    gcs_store.copy(layout.upload_key("show.mp3"), raw_key)  # the upload's delete never happened
    catalog.set_raw_key(episode_id, raw_key)
    gcs_store.write_bytes(layout.episode_key(episode_id, layout.TRANSCRIPT), b"{}")
    assert catalog.set_status(episode_id, expected=S.PROCESSING, new=S.PROCESSED, at=t0 - 2 * DAY)
    waiting = upload(gcs_store, catalog, "waiting.mp3")

    report = purge(catalog, gcs_store, now=t0, retention=DAY)

    [entry] = report.deleted
    assert entry.objects == ("uploads/show.mp3", raw_key)
    assert {k.episode_id: k.reason for k in report.kept} == {waiting: "status=uploaded"}
    assert {info.key for info in gcs_store.list("")} == {
        layout.episode_key(episode_id, layout.TRANSCRIPT),
        "uploads/waiting.mp3",
    }
    assert purge(catalog, gcs_store, now=t0 + timedelta(hours=1), retention=DAY).deleted == ()
