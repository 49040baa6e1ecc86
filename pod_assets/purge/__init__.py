"""Retention-aware purge of raw media: :mod:`~pod_assets.purge.plan` decides (SQL and store
listings, reads only), :mod:`~pod_assets.purge.execute` deletes, :mod:`~pod_assets.purge.report`
says what was deleted, kept and failed, :mod:`~pod_assets.purge.job` is ``purge_job``. The
schedule and the sensor that launch the job are in :mod:`pod_sensors.purge`; ``pod purge``
runs the job in process.

Transcripts, cleaned audio, final episodes and Dagster partitions are never touched. Why no
interleaving with a reprocessing run can delete bytes that run needs is argued in
``docs/purge.md``; in short, per episode:

1. the plan records each object to delete with its generation, before anything is marked;
2. :meth:`Catalog.mark_raw_purged` sets ``raw_purged_at`` in one transaction, only if the
   status, the time of its last change and the upload generation are still those the
   selection saw (an episode that moved to ``processing`` meanwhile is skipped);
3. from then on :meth:`Catalog.set_status` refuses to move it to ``processing``;
4. the objects are deleted, each pinned to its planned generation, raw media last;
5. if a deletion fails, the mark is taken back (compare-and-set) and the episode is tried
   again by the next purge;
6. once its objects are gone, the episode's ``raw_audio`` artifact is cleared. An episode
   marked purged that still lists one is a purge cut short (the process died between the
   mark and the deletes): the next purge lists what is left and deletes it, pinned to the
   generations it sees and only while the mark is the one it read (no run can start on a
   marked episode, and a new upload that restores it clears the mark first).

The Dagster-free parts are re-exported here; the job is imported from
:mod:`pod_assets.purge.job` (it loads Dagster).
"""

from pod_assets.purge.execute import execute_purge, purge
from pod_assets.purge.plan import (
    KEPT_SAMPLE,
    REASON_MAX_DELETIONS,
    REASON_NEW_VERSION,
    REASON_WITHIN_RETENTION,
    PlannedEpisode,
    PurgeError,
    PurgeObject,
    PurgePlan,
    parse_time,
    plan_purge,
    retention_from_hours,
)
from pod_assets.purge.report import DeletedEpisode, FailedEpisode, KeptEpisode, PurgeReport

__all__ = [
    "KEPT_SAMPLE",
    "REASON_MAX_DELETIONS",
    "REASON_NEW_VERSION",
    "REASON_WITHIN_RETENTION",
    "DeletedEpisode",
    "FailedEpisode",
    "KeptEpisode",
    "PlannedEpisode",
    "PurgeError",
    "PurgeObject",
    "PurgePlan",
    "PurgeReport",
    "execute_purge",
    "parse_time",
    "plan_purge",
    "purge",
    "retention_from_hours",
]
