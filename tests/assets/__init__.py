"""Tests of pod_assets: the episode assets, publishing and the purge."""
