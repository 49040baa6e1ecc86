"""One episode from its upload to the finished MP3: ``raw_audio`` -> ``transcript`` ->
``cleaned_audio`` -> ``final_episode``, and the edit drawn for review.

Each asset is one partition of :data:`pod_assets.partitions.episode_partitions` and runs its
body inside :func:`pod_assets.status.episode_step`. The package exports nothing itself, so
that :mod:`pod_assets.status` and the assets import each other's modules without a cycle;
:mod:`pod_assets` assembles the definitions.
"""
