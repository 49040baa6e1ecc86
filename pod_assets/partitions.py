import dagster as dg

episode_partitions = dg.DynamicPartitionsDefinition(name="episodes")
"""One partition per episode; the key is the episode id (see :mod:`pod_assets.layout`)."""
