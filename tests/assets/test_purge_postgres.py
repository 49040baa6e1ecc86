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
from tests.episode_states import DAY, finished, has_raw_media, raw_objects, start, start_of_hour, upload

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


@pytest.mark.gcs
def test_purge_running_during_a_backfill_never_deletes_raw_media_of_a_reprocessing_episode(
    postgres_url, gcs_store, tmp_path
):
    """A real backfill (every episode asset, one run per episode) while the purge runs again
    and again on its own connection, everything on Postgres and the GCS emulator.

    Each reprocessed episode is eligible the moment its run finishes, so the purge keeps
    racing the backfill. A run that starts before the purge marks its episode must never
    lose its raw media mid-run; one that starts after is refused at once.
    """
    import dagster as dg

    from pod_assets.episodes.cleaned_audio import cleaned_audio
    from pod_assets.episodes.final_episode import final_episode
    from pod_assets.episodes.raw_audio import raw_audio
    from pod_assets.episodes.transcript import transcript
    from pod_resources.catalog import CatalogResource
    from pod_resources.show import ShowResource
    from pod_resources.transcriber import WhisperTranscriberResource
    from tests import audio_factory as af

    catalog = Catalog(postgres_url)
    t_old = start_of_hour() - 2 * DAY
    with dg.instance_for_test() as instance:
        ids = []
        for i in range(5):
            path = af.write_audio(
                tmp_path / f"ep{i}.flac",
                af.speech_like(duration_s=2.0, sample_rate=16000, seed=i),
                sample_rate=16000,
            )
            ids.append(
                upload(gcs_store, catalog, f"ep{i}.flac", path.read_bytes(), instance=instance)
            )
            start(gcs_store, catalog, ids[-1], at=t_old)
            assert catalog.set_status(ids[-1], expected=S.PROCESSING, new=S.PROCESSED, at=t_old)

        resources = {
            "store": gcs_store,
            "catalog": CatalogResource(database_url=postgres_url),
            "transcriber": WhisperTranscriberResource(),
            "show": ShowResource(name="Test Show"),
        }
        backfill_done = threading.Event()
        deletions: list[str] = []

        def purger() -> int:
            own = Catalog(postgres_url)
            # Join once the backfill holds its first episode, then keep deleting one at a time.
            while not backfill_done.is_set() and not own.list_episodes(statuses=[S.PROCESSING]):
                backfill_done.wait(0.05)
            rounds = 0
            while not backfill_done.is_set():
                # Everything finished is past the retention: a purge "two days from now".
                report = purge(
                    own, gcs_store, now=start_of_hour() + 3 * DAY, retention=DAY, max_deletions=1
                )
                assert not report.failed, report.failed
                deletions.extend(entry.episode_id for entry in report.deleted)
                rounds += 1
                backfill_done.wait(1.0)
            return rounds

        def backfill() -> dict[str, dg.ExecuteInProcessResult]:
            try:
                return {
                    episode_id: dg.materialize(
                        [raw_audio, transcript, cleaned_audio, final_episode],
                        partition_key=episode_id,
                        resources=resources,
                        instance=instance,
                        raise_on_error=False,
                        tags={"dagster/backfill": "purge-race"},
                    )
                    for episode_id in ids
                }
            finally:
                backfill_done.set()

        purge_thread, purge_box = _in_thread(purger)
        backfill_thread, backfill_box = _in_thread(backfill)
        backfill_thread.join(600)
        purge_thread.join(60)
        assert "error" not in purge_box and "error" not in backfill_box, (purge_box, backfill_box)
        runs: dict[str, dg.ExecuteInProcessResult] = backfill_box["result"]

    reprocessed = [episode_id for episode_id, run in runs.items() if run.success]
    refused = [episode_id for episode_id, run in runs.items() if not run.success]
    for episode_id in refused:
        # Refused before it owned the episode: one failure, at the first step, naming the purge.
        [failure] = [e for e in runs[episode_id].all_events if e.is_step_failure]
        assert failure.step_key == "raw_audio"
        assert "was purged" in failure.step_failure_data.error.message
        assert catalog.get_episode(episode_id).status == S.PROCESSED
    for episode_id in reprocessed:
        history = [(c.from_status, c.to_status) for c in catalog.history(episode_id)]
        assert history[-2:] == [(S.PROCESSED, S.PROCESSING), (S.PROCESSING, S.PROCESSED)]
    # Both sides got work done while the other was running: this was a race.
    assert reprocessed and deletions, (reprocessed, deletions)
    assert purge_box["result"] >= 2
    # No episode is left processing, and nothing is gone that the catalog says is there.
    for episode_id in ids:
        episode = catalog.get_episode(episode_id)
        assert episode.status == S.PROCESSED
        assert has_raw_media(gcs_store, catalog, episode_id) == (episode.raw_purged_at is None)
