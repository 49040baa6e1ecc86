import dagster as dg

process_episode_job = dg.define_asset_job(
    "process_episode_job",
    selection=dg.AssetSelection.groups("episodes"),
    description="Every episode asset of one episode, from the upload to the final MP3.",
)
