"""Run tags the project reads or writes: their one home.

Every layer that starts, watches or recovers runs (``pod_assets``, ``pod_sensors``,
``pod_pipeline``) imports them from here; ``pod_assets`` is the lowest of those layers.
"""

PARTITION_TAG = "dagster/partition"
"""Dagster's own tag: the episode a partitioned run processes."""
RUN_KEY_TAG = "dagster/run_key"
"""Dagster's own tag: the run key a sensor (or ``pod run``) launched the run under."""
CLAIM_TAG = "pod/claim"
"""The owner under which ``pod run`` claimed the run key before launching the run."""
TRIGGER_TAG = "pod/trigger"
"""What started a run: ``cli``, ``upload``, ``schedule``, ``resume``, a sensor's name…"""
ATTEMPT_TAG = "pod/attempt"
"""On a run ``pod run`` launched: a fresh id per launch, by which it finds the run its child
created."""
HOST_TAG = "pod/host"
"""On a run ``pod run`` launched: the host of the process that runs it."""
PID_TAG = "pod/pid"
"""On a run ``pod run`` launched: the process that runs it."""
RESUME_TAG = "pod/resume"
"""On a run that died or was stopped: ``pending`` until a later ``pod run`` deals with it
(``resumed``, ``given-up`` or ``taken-over``)."""
RESUME_OF_TAG = "pod/resume_of"
RESUMES_TAG = "pod/resumes"
"""How many automatic resumes in a row led to this run."""
