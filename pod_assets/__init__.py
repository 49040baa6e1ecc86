"""The pipeline's assets and jobs, by domain: :mod:`pod_assets.episodes` (one episode from its
upload to the finished MP3), :mod:`pod_assets.publish` (subtitles, chapters, the feed, the
show statistics, publishing) and :mod:`pod_assets.purge`; every episode asset is one dynamic
partition per episode (:mod:`pod_assets.partitions`), stored as :mod:`pod_assets.layout` says."""

import dagster as dg

from pod_assets.episodes.cleaned_audio import cleaned_audio
from pod_assets.episodes.final_episode import final_episode
from pod_assets.episodes.raw_audio import raw_audio
from pod_assets.episodes.transcript import transcript
from pod_assets.jobs import process_episode_job
from pod_assets.partitions import episode_partitions
from pod_assets.publish.chapters import chapters
from pod_assets.publish.feed import feed, show_job
from pod_assets.publish.publishing import publish_job, unpublish_job
from pod_assets.publish.show_stats import show_statistics
from pod_assets.publish.subtitles import subtitles
from pod_assets.purge.job import purge_job

__all__ = [
    "chapters",
    "cleaned_audio",
    "defs",
    "episode_partitions",
    "feed",
    "final_episode",
    "process_episode_job",
    "publish_job",
    "purge_job",
    "raw_audio",
    "show_job",
    "show_statistics",
    "subtitles",
    "transcript",
    "unpublish_job",
]

defs = dg.Definitions(
    assets=[raw_audio, transcript, cleaned_audio, final_episode, subtitles, chapters, feed, show_statistics],
    jobs=[process_episode_job, publish_job, unpublish_job, show_job],  # purge_job: pod_sensors, with the purge settings
)
