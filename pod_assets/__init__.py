"""Episode assets: one dynamic partition per episode."""

import dagster as dg

from pod_assets.cleaned_audio import cleaned_audio
from pod_assets.final_episode import final_episode
from pod_assets.jobs import process_episode_job
from pod_assets.partitions import episode_partitions
from pod_assets.publish import publish_job
from pod_assets.purge_job import purge_job
from pod_assets.raw_audio import raw_audio
from pod_assets.transcript import transcript

__all__ = [
    "cleaned_audio",
    "defs",
    "episode_partitions",
    "final_episode",
    "process_episode_job",
    "publish_job",
    "purge_job",
    "raw_audio",
    "transcript",
]

defs = dg.Definitions(
    assets=[raw_audio, transcript, cleaned_audio, final_episode],
    jobs=[process_episode_job, publish_job, purge_job],
)
