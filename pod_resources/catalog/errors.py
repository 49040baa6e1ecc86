"""Errors the catalog's units of work raise (all are :class:`CatalogError`).

None of them imports Dagster: :class:`RawMediaPurgedError` is a
:class:`~pod_audio.errors.PermanentError`, which the asset layer turns into a step failure
that is never retried.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pod_audio.errors import PermanentError
from pod_resources.catalog.engine import CatalogError


class InvalidTransitionError(CatalogError, ValueError):
    """A status change the lifecycle does not allow (see ``ALLOWED_TRANSITIONS``)."""


class EpisodeNotFoundError(CatalogError, LookupError):
    """The episode id is not in the catalog."""


class RawMediaPurgedError(CatalogError, PermanentError):
    """The episode cannot be processed again: the retention purge deleted its raw media.

    Raised by :meth:`Catalog.set_status` for a move to ``processing``, so a reprocessing
    run fails before it owns the episode and nothing about the episode changes. Permanent:
    a run that hits it fails at once, without a retry.
    """

    def __init__(self, episode_id: str, purged_at: datetime) -> None:
        message = (
            f"raw audio for {episode_id} was purged at {purged_at.isoformat(timespec='seconds')}"
        )
        super().__init__(message)
        self.episode_id = episode_id
        self.purged_at = purged_at
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.episode_id, self.purged_at))
