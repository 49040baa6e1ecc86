"""Show statistics: one pandas row per episode, the CSV in the store, the UI table and the
summary's hours published and saved."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd

from pod_assets.publish.publishing import publish_episodes
from pod_assets.publish.show_stats import COLUMNS, STATISTICS_KEY, show_statistics
from tests.episode_states import finished, upload


def test_statistics_table_counts_published_and_saved_hours(pipeline):
    store, catalog = pipeline.store, pipeline.catalog
    t0 = datetime.now(UTC) - timedelta(days=1)
    a = finished(store, catalog, "a.mp3", at=t0)
    b = finished(store, catalog, "b.mp3", at=t0)
    waiting = upload(store, catalog, "waiting.mp3")
    catalog.record_metrics(a, {"duration_s": 3600.0, "cleaned_duration_s": 3000.0, "final_duration_s": 3030.0,
                               "fillers_removed": 40, "pauses_removed_s": 420.0, "loudness_in_lufs": -24.3,
                               "loudness_lufs": -16.0, "true_peak_dbtp": -1.2})
    catalog.record_metrics(b, {"duration_s": 1800.0, "cleaned_duration_s": 1620.0, "final_duration_s": 1650.0})
    publish_episodes(catalog, [a], at=t0 + timedelta(hours=2))

    result = dg.materialize([show_statistics], resources=pipeline.resources, instance=pipeline.instance)

    assert result.success
    frame = pd.read_csv(io.BytesIO(store.read_bytes(STATISTICS_KEY)))
    assert list(frame.columns) == list(COLUMNS)
    rows = frame.set_index("episode_id")
    assert rows.loc[a, "time_saved_s"] == 600.0 and rows.loc[b, "time_saved_s"] == 180.0
    assert rows.loc[a, "published_at"] == (t0 + timedelta(hours=2)).isoformat(timespec="seconds")
    assert pd.isna(rows.loc[b, "published_at"]) and rows.loc[waiting, "status"] == "uploaded"
    [materialization] = result.asset_materializations_for_node("show_statistics")
    metadata = materialization.metadata
    table = metadata["episodes"].value
    assert {r.data["episode_id"]: r.data["fillers_removed"] for r in table.records} == {a: 40, b: None, waiting: None}
    summary = metadata["summary"].value
    assert "**3 episodes** (1 processed, 1 published, 1 uploaded)" in summary
    assert "**0.84 hours published** (50.5 min) in 1 episodes" in summary  # 3030 s
    assert "**0.22 hours saved** (13.0 min) by cleaning (40 fillers, 7.0 min of pauses)" in summary  # 780 s
