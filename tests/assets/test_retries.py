"""Transient errors are retried with exponential backoff and jitter; permanent ones are not.

Transient faults are injected into real runs (an ASR engine that times out once; a GCS
outage, 503s or dropped connections, longer than the storage client's own retry deadline);
the step is retried by its ``RetryPolicy`` and the episode ends ``processed`` without ever
showing ``error``. A permanent fault (a missing input, bad audio) fails once, is never
retried, and is reported once in the catalog.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from pod_assets import defs as asset_defs
from pod_assets import layout
from pod_assets.episodes.cleaned_audio import cleaned_audio
from pod_assets.episodes.final_episode import final_episode
from pod_assets.episodes.raw_audio import raw_audio
from pod_assets.status import EPISODE_STEPS, TRANSIENT_RETRY_POLICY
from pod_assets.episodes.transcript import transcript
from pod_audio.transcript import Transcript
from pod_resources.catalog import CatalogResource, EpisodeStatus
from pod_resources.transcriber import WhisperTranscriberResource
from tests.plugins.fault_proxy import make_proxied_gcs_store
from tests.plugins.pipeline import Pipeline

ALL = [raw_audio, transcript, cleaned_audio, final_episode]


def _events(result: dg.ExecuteInProcessResult, kind: str, step: str | None = None) -> list:
    return [
        e for e in result.all_events
        if e.event_type_value == kind and (step is None or e.step_key == step)
    ]


def test_every_episode_step_has_the_transient_retry_policy() -> None:
    policy = TRANSIENT_RETRY_POLICY
    assert policy.max_retries >= 2
    assert policy.backoff == dg.Backoff.EXPONENTIAL
    assert policy.jitter is not None
    assert policy.delay and policy.delay > 0
    by_step = {
        key.to_user_string(): assets_def.op.retry_policy
        for assets_def in asset_defs.assets  # type: ignore[union-attr]
        if isinstance(assets_def, dg.AssetsDefinition)
        for key in assets_def.keys
    }
    for step in EPISODE_STEPS:
        assert by_step[step] == policy, step


class FlakyASR(WhisperTranscriberResource):
    """The real recogniser behind an ASR endpoint that times out on its first call."""

    marker: str

    def transcribe(self, path: Path, **kwargs) -> Transcript:
        marker = Path(self.marker)
        if not marker.exists():
            marker.write_text("timed out once")
            raise TimeoutError("ASR request timed out after 30 s")
        return super().transcribe(path, **kwargs)


def test_asr_timeout_is_retried_and_the_episode_never_shows_error(pipeline, jfk_path, tmp_path):
    episode_id = pipeline.register("jfk.flac", jfk_path)
    resources = {**pipeline.resources, "transcriber": FlakyASR(marker=str(tmp_path / "m"))}
    result = dg.materialize(
        ALL, partition_key=episode_id, resources=resources, instance=pipeline.instance
    )
    assert result.success
    assert len(_events(result, "STEP_UP_FOR_RETRY", "transcript")) == 1
    assert len(_events(result, "STEP_RESTARTED", "transcript")) == 1
    assert _events(result, "STEP_FAILURE") == []
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.PROCESSED
    assert episode.last_error is None
    statuses = [change.to_status for change in pipeline.catalog.history(episode_id)]
    assert EpisodeStatus.ERROR not in statuses
    assert statuses[-1] == EpisodeStatus.PROCESSED


class DeadASR(WhisperTranscriberResource):
    """An ASR endpoint that never answers in time."""

    def transcribe(self, path: Path, **kwargs) -> Transcript:
        raise TimeoutError("ASR request timed out after 30 s")


def test_a_timeout_that_never_clears_backs_off_then_ends_in_one_error(pipeline, jfk_path):
    episode_id = pipeline.register("jfk.flac", jfk_path)
    pipeline.materialize([raw_audio], episode_id, raise_on_error=True)
    result = dg.materialize(
        [transcript],
        partition_key=episode_id,
        resources={**pipeline.resources, "transcriber": DeadASR()},
        instance=pipeline.instance,
        raise_on_error=False,
    )
    assert not result.success
    retries = _events(result, "STEP_UP_FOR_RETRY", "transcript")
    assert len(retries) == TRANSIENT_RETRY_POLICY.max_retries
    assert len(_events(result, "STEP_FAILURE")) == 1

    # Exponential backoff with +/- jitter: attempt n waits (2**n - 1) * delay, +/- delay.
    delay = TRANSIENT_RETRY_POLICY.delay
    waits = [event.event_specific_data.seconds_to_wait for event in retries]
    for attempt, wait in enumerate(waits, start=1):
        base = (2**attempt - 1) * delay
        assert base - delay <= wait <= base + delay, (attempt, waits)
    assert len(set(waits)) == len(waits), waits  # jittered, not a fixed schedule

    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR
    assert episode.error_step == "transcript"
    assert "timed out" in episode.last_error
    errors = [c for c in pipeline.catalog.history(episode_id) if c.to_status == EpisodeStatus.ERROR]
    assert len(errors) == 1  # retried attempts did not each report an error


def test_missing_input_is_permanent_reported_once_and_not_retried(pipeline, jfk_path):
    episode_id = pipeline.register("jfk.flac", jfk_path)
    pipeline.materialize([raw_audio, transcript], episode_id, raise_on_error=True)
    pipeline.store.delete(layout.episode_key(episode_id, layout.TRANSCRIPT))

    result = pipeline.materialize([cleaned_audio], episode_id)
    assert not result.success
    assert len(_events(result, "STEP_FAILURE")) == 1
    assert _events(result, "STEP_UP_FOR_RETRY") == []
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR
    assert episode.error_step == "cleaned_audio"
    assert layout.episode_key(episode_id, layout.TRANSCRIPT) in episode.last_error
    errors = [c for c in pipeline.catalog.history(episode_id) if c.to_status == EpisodeStatus.ERROR]
    assert len(errors) == 1


OUTAGE_S = 4.0


@pytest.mark.gcs
@pytest.mark.parametrize("fault", ["503", "reset"])
def test_storage_outage_longer_than_the_client_deadline_is_retried_by_the_step(
    fault, gcs_fault_proxy, short_speech, tmp_path
):
    """The GCS client retries within ``retry_deadline_s``; an outage that outlasts it fails
    the step with a transient error, and the step's own policy runs it again."""
    # A deadline that leaves the client room for at least one retry of its own (its first
    # backoff is about 1 s) even on a loaded machine.
    store = make_proxied_gcs_store(gcs_fault_proxy, timeout_s=1.0, retry_deadline_s=2.5)
    applied: list[float] = []
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(
            instance=instance,
            store=store,
            catalog_resource=CatalogResource(database_url=f"sqlite:///{tmp_path / 'catalog.db'}"),
        )
        episode_id = pipeline.register("speech.wav", short_speech)
        pipeline.materialize([raw_audio], episode_id, raise_on_error=True)

        # Every upload (the transcript is the step's only one) fails until the outage ends, 4 s after it began:
        # longer than the client's deadline, shorter than the step's retries.
        gcs_fault_proxy.fail_next(
            fault, method="POST", path=r"^/upload/", times=None,
            on_fault=lambda: applied.append(time.monotonic()),
        )

        def end_outage() -> None:
            while not applied:
                time.sleep(0.05)
            time.sleep(max(0.0, applied[0] + OUTAGE_S - time.monotonic()))
            gcs_fault_proxy.reset()

        ender = threading.Thread(target=end_outage, daemon=True)
        ender.start()
        result = pipeline.materialize([transcript], episode_id)
        ender.join(30)

    assert result.success
    assert len(applied) >= 2  # the client itself retried before giving up
    assert _events(result, "STEP_UP_FOR_RETRY", "transcript")
    assert _events(result, "STEP_FAILURE") == []
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.PROCESSED
    assert EpisodeStatus.ERROR not in [c.to_status for c in pipeline.catalog.history(episode_id)]
    words = store.read_json(layout.episode_key(episode_id, layout.TRANSCRIPT))["words"]
    assert words
