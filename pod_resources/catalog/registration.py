"""Registering one landed object generation: the unit of work behind
:meth:`Catalog.register_upload`, one transaction. What an upload means
(:class:`RegistrationKind`):

- this ``(object_name, generation)`` was registered before: ``ALREADY_SEEN``, nothing
  written;
- some episode already has these bytes: ``DUPLICATE``; the upload is recorded with
  ``duplicate_of`` and the episode is left alone (this includes the same bytes uploaded
  again under the same name, unless the purge took that episode's raw media: then it is
  ``RESTORED``, its generation updated and ``raw_purged_at`` cleared, so it may be
  processed again);
- the upload name's own id exists, so these are different bytes under the name of an
  existing episode: ``NEW_VERSION``, a new episode ``<id>-v<n>`` (n = the highest version
  of the name + 1) with status ``uploaded``, ``version_of = <id>``. No earlier version is
  changed: its row, status and objects stay as they are (a published one stays published
  until :meth:`Catalog.publish` publishes another version);
- otherwise ``NEW``: the episode is created with status ``uploaded``, version 1.

Invariants: registering never changes an existing episode's bytes, content hash or status;
only ``RESTORED`` touches an existing row, and only to bring back its own bytes. A retry of
an attempt whose commit went through reports what that attempt did, from the upload's
``seen_at``, which the unit fixed before its first attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pod_resources.catalog.engine import CatalogError
from pod_resources.catalog.models import EpisodeRow, EpisodeStatus, UploadRow
from pod_resources.catalog.records import (
    Registration,
    RegistrationKind,
    to_episode,
    to_upload,
    version_episode_id,
)
from pod_resources.catalog.rows import add_episode, add_upload, of_upload_name


@dataclass(frozen=True)
class UploadRegistration:
    """One call of :meth:`Catalog.register_upload`, its time fixed (``now``)."""

    object_name: str
    generation: int
    content_hash: str
    episode_id: str
    """The upload name's own id (version 1's)."""
    title: str
    now: datetime

    def register(self, session: Session, retrying: bool) -> Registration:
        seen = session.get(UploadRow, (self.object_name, self.generation))
        if seen is not None:
            return self._seen_before(session, seen, retrying)
        same_bytes = session.scalars(
            sa.select(EpisodeRow).where(EpisodeRow.content_hash == self.content_hash)
        ).one_or_none()
        if same_bytes is not None:
            return self._bytes_known(session, same_bytes)
        return self._new_episode(session)

    def _seen_before(self, session: Session, seen: UploadRow, retrying: bool) -> Registration:
        episode = session.get(EpisodeRow, seen.episode_id)
        assert episode is not None  # foreign key
        kind = RegistrationKind.ALREADY_SEEN
        if retrying and seen.seen_at == self.now:
            # An earlier attempt of this very call committed; report what it did.
            if seen.duplicate_of is not None:
                kind = RegistrationKind.DUPLICATE
            elif episode.created_at != self.now:
                kind = RegistrationKind.RESTORED
            elif episode.version > 1:
                kind = RegistrationKind.NEW_VERSION
            else:
                kind = RegistrationKind.NEW
        return Registration(kind, to_episode(episode), to_upload(seen))

    def _bytes_known(self, session: Session, same_bytes: EpisodeRow) -> Registration:
        """The same bytes again under the same name after the purge took the raw media bring
        that episode back; otherwise they are a duplicate."""
        if same_bytes.source_name != self.object_name or same_bytes.raw_purged_at is None:
            return self._record(session, RegistrationKind.DUPLICATE, same_bytes, duplicate=True)
        episode = session.get(EpisodeRow, same_bytes.episode_id, with_for_update=True)
        assert episode is not None
        episode.source_generation = self.generation
        episode.updated_at = self.now
        # The purge never deletes this generation: it is raw media again.
        episode.raw_purged_at = None
        return self._record(session, RegistrationKind.RESTORED, episode)

    def _new_episode(self, session: Session) -> Registration:
        """Version 1 of a name never seen, or the next version of an existing episode's name."""
        root = session.get(EpisodeRow, self.episode_id, with_for_update=True)
        if root is not None and root.source_name != self.object_name:
            raise CatalogError(
                f"episode id {self.episode_id!r} belongs to upload {root.source_name!r}, "
                f"not {self.object_name!r}"
            )
        if root is None:
            kind, version = RegistrationKind.NEW, 1
        else:
            kind, version = RegistrationKind.NEW_VERSION, self._latest_version(session) + 1
        episode = EpisodeRow(
            episode_id=version_episode_id(self.episode_id, version),
            source_name=self.object_name,
            source_generation=self.generation,
            content_hash=self.content_hash,
            title=self.title,
            status=EpisodeStatus.UPLOADED.value,
            created_at=self.now,
            updated_at=self.now,
            status_changed_at=self.now,
            metrics={},
            artifacts={},
            version=version,
            version_of=None if version == 1 else self.episode_id,
        )
        message = None if version == 1 else f"version {version} of {self.episode_id}"
        add_episode(session, episode, message=message)
        return self._record(session, kind, episode)

    def _latest_version(self, session: Session) -> int:
        """Highest version of this upload name (its version 1's row is locked)."""
        latest = session.scalar(
            sa.select(sa.func.max(EpisodeRow.version)).where(of_upload_name(self.episode_id))
        )
        return int(latest or 1)

    def _record(
        self,
        session: Session,
        kind: RegistrationKind,
        episode: EpisodeRow,
        *,
        duplicate: bool = False,
    ) -> Registration:
        upload = add_upload(
            session,
            episode,
            self.object_name,
            self.generation,
            seen_at=self.now,
            duplicate=duplicate,
        )
        return Registration(kind, to_episode(episode), to_upload(upload))
