"""Defaults of the settings the definitions are built with: their one home.

:class:`pod_pipeline.settings.Settings` takes its defaults from here (the environment
overrides them), and so do the builders that tests and benchmarks call without settings:
the purge job, its schedule and sensor, the upload sensor. ``pod_assets`` and ``pod_sensors``
sit below ``pod_pipeline`` and never import it, so the values live at this lowest layer.
"""

PURGE_RETENTION_HOURS = 24.0
"""Raw media of episodes finished longer ago than this is purged (``POD_PURGE_RETENTION_HOURS``)."""
PURGE_MAX_DELETIONS = 1000
"""Episodes one purge run deletes the raw media of, at most (``POD_PURGE_MAX_DELETIONS``)."""
PURGE_CRON = "0 3 * * *"
"""When the purge schedule runs, UTC (``POD_PURGE_CRON``)."""
SENSOR_INTERVAL_S = 30
"""Seconds between two upload-sensor ticks (``POD_SENSOR_INTERVAL_S``)."""
MAX_RUNS_PER_TICK = 20
"""Runs the upload sensor requests per tick, at most (``POD_MAX_RUNS_PER_TICK``)."""
MAX_REGISTRATIONS_PER_TICK = 2000
"""Uploads the upload sensor registers per tick, at most (``POD_MAX_REGISTRATIONS_PER_TICK``)."""
