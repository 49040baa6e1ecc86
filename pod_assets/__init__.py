"""Episode assets: one dynamic partition per episode."""

import dagster as dg

from pod_assets.jobs import process_episode_job
from pod_assets.partitions import episode_partitions
from pod_assets.raw_audio import raw_audio
from pod_assets.transcript import transcript

__all__ = ["defs", "episode_partitions", "process_episode_job", "raw_audio", "transcript"]

defs = dg.Definitions(
    assets=[raw_audio, transcript],
    jobs=[process_episode_job],
)
