"""Keeps an episode's catalog status true to what its runs are doing.

Every episode asset runs its body inside :func:`episode_step`:

* on entry the episode moves to ``processing`` owned by this run (compare-and-set, so a
  second run of the same partition takes over and the first can no longer write);
* on failure it moves to ``error`` with the step and a message a producer understands,
  unless the step is about to be retried;
* when the step is the last episode asset the run materialises, it moves to
  ``processed``, and back to ``published`` when this reprocessing began from there
  (:func:`pod_assets.publish.publishing.republish_after_reprocess`).
* a stop from outside (``dg.DagsterExecutionInterruptedError`` or ``KeyboardInterrupt``:
  a signal, a run terminated from the UI) moves it to ``error`` saying where it stopped,
  and ends the run: an interrupt is never retried;
* a run that owned the episode and lost it to a newer run stops at its next step without
  writing; a run launched for an upload's run key goes on only while it holds the key's
  claim in the catalog (the same upload is never processed by two runs).

That holds whatever launched the run: the upload sensor, the UI, a backfill or ``pod run``.
A run that dies without reaching an ``except`` (killed worker) is caught by the run-status
sensors in :mod:`pod_sensors.run_status`, which call :func:`mark_run_failed`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import dagster as dg

from pod_audio.errors import AudioInputError, PermanentError
from pod_assets.publish.publishing import republish_after_reprocess
from pod_assets.tags import CLAIM_TAG, RUN_KEY_TAG
from pod_resources.catalog import Catalog, Episode, EpisodeStatus

EPISODE_STEPS: tuple[str, ...] = (
    "raw_audio", "transcript", "cleaned_audio", "final_episode", "subtitles", "chapters",
)
FOLLOW_UP_STEPS: tuple[str, ...] = ("subtitles", "chapters")
"""Steps that read what ``final_episode`` writes (the intro offset, the MP3 that carries the
chapter frames) and the cleaned timeline it was made from."""


def with_follow_ups(steps: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``steps`` plus :data:`FOLLOW_UP_STEPS` when they rewrite the final episode, in
    pipeline order: re-mastering alone would leave ``episode.mp3`` without its chapter
    frames and the subtitles on the old timeline."""
    wanted = set(steps)
    if "final_episode" in wanted:
        wanted |= set(FOLLOW_UP_STEPS)
    return tuple(step for step in EPISODE_STEPS if step in wanted)


RAW_MEDIA_STEPS: frozenset[str] = frozenset({"raw_audio", "transcript", "cleaned_audio"})
"""Steps that read the raw media. Only these are refused after the retention purge; later
steps start from the stored cleaned audio."""

TRANSIENT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3,
    delay=2.0,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
"""Retries storage hiccups, dropped connections and ASR timeouts. A permanent problem (bad
input, a missing input object, purged raw media) is a :class:`~pod_audio.errors.PermanentError`;
the step fails with it as an :class:`EpisodeInputError` (``dg.Failure(allow_retries=False)``),
which Dagster never retries."""

_MAX_ERROR_CHARS = 2000


class EpisodeInputError(PermanentError, dg.Failure):
    """A permanent problem with an episode (bad audio, purged or missing input), as the step
    failure Dagster never retries."""

    def __init__(self, message: str, *, metadata: dict | None = None):
        super().__init__(description=message, metadata=metadata, allow_retries=False)
        self.message = message


INTERRUPTS: tuple[type[BaseException], ...] = (dg.DagsterExecutionInterruptedError, KeyboardInterrupt)
"""How a stop reaches a step: a signal to ``pod run``, or a run terminated from the UI."""

class EpisodeStepInterrupted(dg.Failure):
    """The step was stopped from outside. Never retried: the run ends here."""

    def __init__(self, message: str):
        super().__init__(description=message, allow_retries=False)
        self.message = message


class EpisodeTakenOverError(dg.Failure):
    """Another run took the episode over from this one; this run must not write it again."""

    def __init__(self, message: str):
        super().__init__(description=message, allow_retries=False)
        self.message = message


def run_key_claim(run_key: str) -> str:
    """The catalog claim key of an upload's run key (see ``Catalog.claim``)."""
    return f"run_key:{run_key}"


def _hold_run_key(catalog: Catalog, run: dg.DagsterRun) -> None:
    """A run launched for an upload's run key goes on only if it (or its root run, or the
    ``pod run`` that launched it) holds the key's claim: the same upload is never processed
    by two runs, whichever launched them (daemon or ``pod run``)."""
    run_key = run.tags.get(RUN_KEY_TAG)
    if not run_key:
        return
    mine = run.tags.get(CLAIM_TAG) or run.root_run_id or run.run_id
    holder = catalog.claim(run_key_claim(run_key), owner=mine)
    if holder != mine:
        raise EpisodeTakenOverError(
            f"run key {run_key} was launched by {holder} already; this duplicate run does nothing"
        )


def _owned_before(catalog: Catalog, episode_id: str, run_id: str) -> bool:
    return any(
        change.run_id == run_id and change.to_status == EpisodeStatus.PROCESSING
        for change in catalog.history(episode_id)
    )


def _mark_error(catalog: Catalog, episode_id: str, *, run_id: str, step: str, error: str) -> None:
    """``processing`` -> ``error`` with ``error``, only while run ``run_id`` owns the episode."""
    catalog.set_status(
        episode_id,
        expected=EpisodeStatus.PROCESSING,
        new=EpisodeStatus.ERROR,
        error=error,
        step=step,
        only_if_run_id=run_id,
    )


def _interrupted(
    catalog: Catalog, *, episode_id: str, run_id: str, step: str
) -> EpisodeStepInterrupted:
    """Mark the episode ``error`` for a stopped step (only while this run owns it)."""
    message = (
        f"stopped during {step}: run {run_id[:8]} was interrupted (terminated or signalled); "
        "process the episode again to finish it"
    )
    _mark_error(catalog, episode_id, run_id=run_id, step=step, error=message)
    return EpisodeStepInterrupted(message)


def _fail_permanently(exc: PermanentError, step: str) -> NoReturn:
    """Fail the step with ``exc`` so that Dagster never retries it: as it is when it is such
    a ``dg.Failure`` already, else as an :class:`EpisodeInputError` naming the step."""
    if isinstance(exc, dg.Failure):
        raise exc
    raise EpisodeInputError(f"{step}: {exc}") from exc


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, EpisodeInputError):
        text = exc.message
    elif isinstance(exc, AudioInputError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:_MAX_ERROR_CHARS]


def _steps_in_run(context: dg.AssetExecutionContext) -> list[str]:
    # A run launched with an explicit selection (UI, backfill) carries it; otherwise the
    # job's own selection is the run's.
    selection = context.run.asset_selection or context.job_def.asset_layer.selected_asset_keys
    names = {key.to_user_string() for key in selection}
    return [step for step in EPISODE_STEPS if step in names]


def _begin(catalog: Catalog, episode_id: str, run_id: str, *, needs_raw: bool) -> Episode:
    for _ in range(3):
        episode = catalog.get_episode(episode_id)
        if episode is None:
            raise EpisodeInputError(f"episode {episode_id} is not in the catalog")
        if episode.status == EpisodeStatus.PROCESSING and episode.processing_run_id == run_id:
            return episode
        if episode.processing_run_id != run_id and _owned_before(catalog, episode_id, run_id):
            # Taken over by a newer run: never take it back (the newer run's work would be
            # overwritten by this older one's).
            raise EpisodeTakenOverError(
                f"run {run_id} lost episode {episode_id} to run {episode.processing_run_id}; "
                "it stops without writing"
            )
        if catalog.set_status(
            episode_id,
            expected=episode.status,
            new=EpisodeStatus.PROCESSING,
            run_id=run_id,
            needs_raw=needs_raw,
        ):
            return catalog.get_episode(episode_id)  # type: ignore[return-value]
    raise RuntimeError(f"episode {episode_id} kept changing status; try the run again")


@dataclass
class EpisodeStep:
    """What an asset body gets from :func:`episode_step`."""

    episode: Episode
    failed_checks: list[str] = field(default_factory=list)

    @property
    def episode_id(self) -> str:
        return self.episode.episode_id

    def check(
        self,
        name: str,
        *,
        passed: bool,
        description: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> dg.AssetCheckResult:
        """A blocking check result; a failure marks the episode ``error`` with ``description``."""
        if not passed:
            self.failed_checks.append(f"check {name} failed: {description}")
        return dg.AssetCheckResult(
            check_name=name,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=description,
            metadata=dict(metadata or {}),
        )


@contextmanager
def episode_step(
    context: dg.AssetExecutionContext, catalog: Catalog, *, step: str
) -> Iterator[EpisodeStep]:
    """Run one step of an episode with its status kept true (see the module docstring)."""
    episode_id = context.partition_key
    run_id = context.run.run_id
    _hold_run_key(catalog, context.run)
    try:
        state = EpisodeStep(
            episode=_begin(catalog, episode_id, run_id, needs_raw=step in RAW_MEDIA_STEPS)
        )
    except INTERRUPTS as exc:
        raise _interrupted(catalog, episode_id=episode_id, run_id=run_id, step=step) from exc
    except PermanentError as exc:
        # Refused before the run owned the episode (raw media purged): nothing to mark.
        _fail_permanently(exc, step)
    try:
        yield state
    except INTERRUPTS as exc:
        # Stopped from outside: say so and end the run; an interrupt is never retried
        # (Dagster would retry it under the RetryPolicy, and the status would flicker).
        raise _interrupted(catalog, episode_id=episode_id, run_id=run_id, step=step) from exc
    except BaseException as exc:
        # Bad audio and a missing input object are permanent: fail once, never retry
        # (an input either exists or the step fails at once; nothing polls for it).
        permanent = isinstance(exc, PermanentError)
        retries_left = context.retry_number < TRANSIENT_RETRY_POLICY.max_retries
        if permanent or not retries_left or not isinstance(exc, Exception):
            message = describe_error(exc)
            _mark_error(catalog, episode_id, run_id=run_id, step=step, error=message)
        if isinstance(exc, PermanentError):
            _fail_permanently(exc, step)
        raise
    if state.failed_checks:
        checks = "; ".join(state.failed_checks)[:_MAX_ERROR_CHARS]
        _mark_error(catalog, episode_id, run_id=run_id, step=step, error=checks)
        return
    steps = _steps_in_run(context)
    if steps and steps[-1] == step:
        if catalog.set_status(
            episode_id,
            expected=EpisodeStatus.PROCESSING,
            new=EpisodeStatus.PROCESSED,
            only_if_run_id=run_id,
        ):
            republish_after_reprocess(catalog, episode_id)


def mark_run_failed(catalog: Catalog, *, episode_id: str, run_id: str, message: str) -> bool:
    """Mark an episode ``error`` for a run that ended without its steps saying so.

    Only when that run still owns the episode: a newer run is never overwritten.
    """
    episode = catalog.get_episode(episode_id)
    if episode is None or episode.status != EpisodeStatus.PROCESSING:
        return False
    return catalog.set_status(
        episode_id,
        expected=EpisodeStatus.PROCESSING,
        new=EpisodeStatus.ERROR,
        error=message[:_MAX_ERROR_CHARS],
        step="run",
        only_if_run_id=run_id,
    )
