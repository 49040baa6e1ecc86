"""The sensor's and the purge's guarantees with 10,000 episodes on Postgres.

Catalogs are built by bulk inserts (``bench/scale.py``'s builders, the same the scale
benchmark measures); the sensor, the purge and ``pod status`` then run as they do in
production. Speed is measured by ``make bench-scale``, not here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from bench.scale import NOW, RETENTION, build_history, build_uploads
from pod_assets import layout
from pod_assets.purge import (
    KEPT_SAMPLE,
    REASON_MAX_DELETIONS,
    REASON_WITHIN_RETENTION,
    execute_purge,
    plan_purge,
)
from pod_resources.catalog import Catalog, CatalogResource, FINISHED_STATUSES, queries
from pod_resources.storage import LocalObjectStore
from pod_sensors.uploads import build_upload_sensor
from tests.catalog_revisions import write_at_revision

N = 10_000


def _tick(instance, store, catalog_resource, cursor):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"store": store, "catalog": catalog_resource}
    ) as context:
        result = build_upload_sensor()(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions("episodes", list(request.partition_keys))
    return result


def test_upload_sensor_with_ten_thousand_waiting_uploads(postgres_url, tmp_path):
    build_uploads(postgres_url, tmp_path / "store", N)
    store = LocalObjectStore(root=str(tmp_path / "store"))
    resource = CatalogResource(database_url=postgres_url)
    catalog = Catalog(postgres_url)
    with dg.instance_for_test() as instance:
        steady = _tick(instance, store, resource, None)  # as pod run evaluates it
        assert not steady.run_requests and not steady.dynamic_partitions_requests
        assert len(steady.cursor.encode()) <= 10_000

        store.write_bytes(layout.upload_key("zz-a new.wav"), b"RIFF new bytes")
        store.write_bytes(layout.upload_key("zz-b copy.wav"), b"RIFF new bytes")
        fresh = _tick(instance, store, resource, steady.cursor)
        new_id = layout.episode_id_for("zz-a new.wav")
        assert [r.partition_key for r in fresh.run_requests] == [new_id]
        assert list(fresh.dynamic_partitions_requests[0].partition_keys) == [new_id]
        [copy] = [u for u in catalog.uploads() if u.object_name == "zz-b copy.wav"]
        assert copy.duplicate_of == new_id  # dedup by content, as with one upload
        assert len(fresh.cursor.encode()) <= 10_000
        again = _tick(instance, store, resource, fresh.cursor)
        assert not again.run_requests
        assert queries.count_episodes(catalog) == N + 1
        # A page whose name range holds thousands of recorded uploads is asked for by name.
        first, last = "upload-000000.wav", f"upload-{N - 1:06d}.wav"
        recorded = queries.registered_generations(catalog, [first, last, "zz-c never.wav"])
        assert {name for name, _ in recorded} == {first, last}


def test_purge_plan_and_backlog_with_ten_thousand_episodes(postgres_url, tmp_path):
    build_history(postgres_url, tmp_path / "store", N)
    store = LocalObjectStore(root=str(tmp_path / "store"))
    catalog = Catalog(postgres_url)
    plan = plan_purge(catalog, store, now=NOW, retention=RETENTION, max_deletions=300)
    eligible = N - 3 * N // 20  # bench.scale: 1 in 20 recent, 1 in 20 error, 1 in 20 processing
    assert plan.eligible_total == eligible
    planned = [p.episode_id for p in plan.eligible]
    oldest = catalog.purge_candidates(now=NOW, retention=RETENTION, limit=300)
    assert planned == [e.episode_id for e in oldest]  # retention order, first first
    assert all(p.status in FINISHED_STATUSES for p in plan.eligible)
    assert all(p.status_changed_at < NOW - RETENTION for p in plan.eligible)
    assert plan.kept_counts == {
        REASON_WITHIN_RETENTION: N // 20,
        "status=error": N // 20,
        "status=processing": N // 20,
        REASON_MAX_DELETIONS: eligible - 300,
    }
    assert len(plan.kept) <= 3 * KEPT_SAMPLE  # waiting, within retention, left for later

    report = execute_purge(catalog, store, plan)
    assert len(report.deleted) == 300 and not report.failed
    assert all(not (tmp_path / "store" / "episodes" / e / "raw.wav").exists() for e in planned)
    backlog = queries.purge_backlog(catalog, now=NOW, retention=RETENTION)
    assert backlog.count == eligible - 300
    after = plan_purge(catalog, store, now=NOW, retention=RETENTION, max_deletions=300)
    assert not set(planned) & {p.episode_id for p in after.eligible}
    assert after.eligible[0].status_changed_at >= plan.eligible[-1].status_changed_at


@pytest.mark.parametrize("limit", [25])
def test_status_pages_and_counts_with_ten_thousand_episodes(postgres_url, tmp_path, limit):
    from pod_resources.catalog import EpisodeStatus

    build_history(postgres_url, tmp_path / "store", N)
    catalog = Catalog(postgres_url)
    errors = queries.EpisodeFilter(statuses=frozenset({EpisodeStatus.ERROR}))
    assert queries.count_episodes(catalog, errors) == N // 20
    page = list(queries.iter_episodes(catalog, errors, limit=limit, batch=10))
    assert len(page) == limit and all(e.status == EpisodeStatus.ERROR for e in page)
    assert [e.created_at for e in page] == sorted(e.created_at for e in page)
    recent = queries.EpisodeFilter(since=NOW - timedelta(hours=3))
    assert queries.count_episodes(catalog, recent) == 2 * N // 20  # recent + processing
    everything = sum(1 for _ in queries.iter_episodes(catalog, limit=None, batch=2_000))
    assert everything == N


def test_migration_0004_adds_the_indexes_to_an_existing_catalog(catalog_url):
    """A catalog made by the release before (revision 0003) is upgraded in place."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    write_at_revision(
        catalog_url,
        "0003",
        [
            "INSERT INTO episodes (episode_id, source_name, source_generation, content_hash, "
            "title, status, created_at, updated_at, status_changed_at, metrics, artifacts, "
            "version) VALUES ('ep-a', 'a.wav', 1, 'h1', 'A', 'processed', :t, :t, :t, "
            "'{}', '{}', 1)",
        ],
        t=t0,
    )
    catalog = Catalog(catalog_url, application_name=f"pod-test-{uuid.uuid4().hex[:8]}")
    [episode] = catalog.purge_candidates(now=t0 + timedelta(days=2), retention=RETENTION)
    assert episode.episode_id == "ep-a"
    indexes = {i["name"] for i in sa.inspect(catalog.engine).get_indexes("episodes")}
    assert {"ix_episodes_purge_order", "ix_episodes_created"} <= indexes
