import dagster as dg

from pod_assets.partitions import episode_partitions

process_episode_job = dg.define_asset_job(
    "process_episode_job",
    selection=dg.AssetSelection.groups("episodes"),
    partitions_def=episode_partitions,
    description="Every episode asset of one episode, from the upload to the final MP3.",
)
