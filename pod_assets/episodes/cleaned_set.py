"""The outputs of one ``cleaned_audio`` run as one whole: ``episodes/<ep>/cleaned_set.json``.

``cleaned_audio`` writes ``cleaned.flac``, the review files, ``cut_list.json`` and
``cleaned_transcript.json`` one after another, then this set, naming every key it wrote with
the generation it wrote there. So:

- a run cut short before the set was written leaves the previous run's set (or none): the
  set never names an object of a run that did not finish;
- a reader takes an object of the set only at the generation the set names
  (:meth:`CleanedSet.read_to_path`), so what it gets never mixes two cleaning runs;
- no set at all means no cleaning of the episode finished (:func:`read_cleaned_set` fails with
  one line saying so).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pod_assets import layout
from pod_assets.status import EpisodeInputError
from pod_resources.storage import ObjectInfo, ObjectNotFoundError, ObjectStore

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CleanedSet:
    """Output name (``cleaned_audio``, ``cut_list``…) -> ``(key, generation)`` as written."""

    key: str
    """Where the set itself is stored."""
    objects: Mapping[str, tuple[str, int]]

    def read_to_path(self, store: ObjectStore, name: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Output ``name`` read into ``path``; :class:`EpisodeInputError` when the stored
        object is not the one this set names (a later cleaning run was cut short)."""
        key, generation = self.objects[name]
        info = store.read_to_path(key, path)
        if info.generation != generation:
            raise EpisodeInputError(
                f"{key} is not the one {self.key} names (generation {info.generation}, not "
                f"{generation}): they come from different cleaning runs (one was cut short); "
                "materialise cleaned_audio again"
            )
        return info


def write_cleaned_set(store: ObjectStore, episode_id: str, written: Mapping[str, ObjectInfo]) -> CleanedSet:
    """Store the set of what a cleaning run wrote; call it after the run's last write."""
    key = layout.episode_key(episode_id, layout.CLEANED_SET)
    objects = {name: (info.key, info.generation) for name, info in written.items()}
    store.write_json(key, {
        "version": _FORMAT_VERSION,
        "objects": {name: {"key": k, "generation": g} for name, (k, g) in objects.items()},
    })
    return CleanedSet(key=key, objects=objects)


def read_cleaned_set(store: ObjectStore, episode_id: str) -> CleanedSet:
    """The set the episode's last finished cleaning wrote.

    Raises:
        EpisodeInputError: there is none: cleaning never finished for the episode.
    """
    key = layout.episode_key(episode_id, layout.CLEANED_SET)
    try:
        data = store.read_json(key)
    except ObjectNotFoundError:
        raise EpisodeInputError(
            f"{key} is missing: cleaned_audio did not finish for {episode_id}; materialise cleaned_audio again"
        ) from None
    objects = {name: (str(o["key"]), int(o["generation"])) for name, o in data["objects"].items()}
    return CleanedSet(key=key, objects=objects)
