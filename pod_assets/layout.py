"""Episode ids and the object-store layout. The same keys on local disk and in GCS::

    uploads/<original name>              landing zone; cleared once raw_audio took it
    episodes/<ep>/raw.<ext>              the original bytes, immutable
    episodes/<ep>/transcript.json
    episodes/<ep>/cut_list.json
    episodes/<ep>/cleaned.flac
    episodes/<ep>/cleaned_transcript.json
    episodes/<ep>/cleaned_set.json           what the last finished cleaning wrote (written last)
    episodes/<ep>/episode.mp3
    episodes/<ep>/subtitles.vtt|.srt|.json   final timeline (WebVTT, SRT, Podcasting 2.0)
    episodes/<ep>/chapter_marks.txt|.json    the producer's chapter marks, raw timeline
    episodes/<ep>/chapters.json              Podcasting 2.0 chapters, final timeline
    episodes/<ep>/edit.png                   the edit as a picture (docs/review.md)
    episodes/<ep>/edit_sketch.json           the raw audio reduced for drawing it
    episodes/<ep>/cut_labels.txt             removed spans, Audacity labels, raw timeline
    episodes/<ep>/cleaned.edl                cleaned timeline, CMX 3600 EDL
    show/feed.xml, show/artwork.<ext>, show/statistics.csv

Every version of an upload name is an episode of its own: version 1 has the name's id
(:func:`episode_id_for`), version n the id ``<that id>-v<n>``
(:func:`pod_resources.catalog.version_episode_id`), so a new version's objects never
overwrite an earlier version's.

Names from uploads are hostile input (``../``, NUL, 300 characters, right-to-left marks,
emoji). Only :func:`episode_id_for` and :func:`raw_extension` turn them into key parts,
and both return ``[a-z0-9-]`` strings, so nothing derived from a name can leave
``episodes/<ep>/``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from pod_resources.catalog import version_episode_id

UPLOADS_PREFIX = "uploads/"
EPISODES_PREFIX = "episodes/"

TRANSCRIPT = "transcript.json"
CUT_LIST = "cut_list.json"
CLEANED_AUDIO = "cleaned.flac"
CLEANED_TRANSCRIPT = "cleaned_transcript.json"
CLEANED_SET = "cleaned_set.json"
"""The keys and generations one ``cleaned_audio`` run wrote (:mod:`pod_assets.episodes.cleaned_set`)."""
FINAL_EPISODE = "episode.mp3"
SUBTITLES_VTT = "subtitles.vtt"
SUBTITLES_SRT = "subtitles.srt"
TRANSCRIPT_JSON = "subtitles.json"
"""The Podcasting 2.0 JSON transcript (one segment per word, final timeline)."""
CHAPTERS = "chapters.json"
CHAPTER_MARKS = "chapter_marks"
"""``chapter_marks.txt`` or ``.json``: the producer's marks on the raw timeline, as sent."""
EDIT_IMAGE = "edit.png"
EDIT_SKETCH = "edit_sketch.json"
CUT_LABELS = "cut_labels.txt"
CUT_EDL = "cleaned.edl"

ARTIFACT_FILES: dict[str, str] = {
    "transcript": TRANSCRIPT,
    "cleaned_audio": CLEANED_AUDIO,
    "cut_list": CUT_LIST,
    "cleaned_transcript": CLEANED_TRANSCRIPT,
    "final_episode": FINAL_EPISODE,
    "subtitles_vtt": SUBTITLES_VTT,
    "subtitles_srt": SUBTITLES_SRT,
    "transcript_json": TRANSCRIPT_JSON,
    "chapters": CHAPTERS,
    "edit_image": EDIT_IMAGE,
    "cut_labels": CUT_LABELS,
    "cut_edl": CUT_EDL,
}
ARTIFACT_STAGES: tuple[str, ...] = ("raw_audio", *ARTIFACT_FILES)

_SLUG_MAX = 40
_HASH_CHARS = 10
_EXT_RE = re.compile(r"^[a-z0-9]{1,5}$")


def _name_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


def slugify(text: str) -> str:
    """ASCII, lower case, words joined by ``-``; empty when nothing printable is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def _stem_and_ext(name: str) -> tuple[str, str]:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    return (stem, ext) if dot and stem else (base, "")


def episode_id_for(object_name: str) -> str:
    """Stable, path-safe episode id for an upload name: ``<slug of stem>-<hash>``.

    The hash is of the full name, so two names with the same slug stay two episodes,
    and the same name always maps to the same id: version 1's. Later versions (different
    bytes under the same name) get ``<id>-v<n>``, see :func:`version_id`.
    """
    stem, _ = _stem_and_ext(object_name)
    slug = slugify(stem)[:_SLUG_MAX].strip("-") or "episode"
    digest = hashlib.sha256(_name_bytes(object_name)).hexdigest()[:_HASH_CHARS]
    return f"{slug}-{digest}"


def version_id(object_name: str, version: int) -> str:
    """Episode id of ``version`` of an upload name (``episode_id_for`` for version 1)."""
    return version_episode_id(episode_id_for(object_name), version)


def raw_extension(object_name: str) -> str:
    """File extension of an upload, lower case; ``bin`` when absent or not plain."""
    _, ext = _stem_and_ext(object_name)
    ext = ext.lower()
    return ext if _EXT_RE.match(ext) else "bin"


def display_title(object_name: str) -> str:
    """A readable title from an upload name: control and bidi characters removed."""
    stem, _ = _stem_and_ext(object_name)
    cleaned = "".join(
        ch for ch in stem if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co", "Cn"}
    )
    cleaned = re.sub(r"[\s_]+", " ", cleaned).strip()
    return cleaned[:200] or "Untitled episode"


CHAPTER_SIDECAR_FORMATS = {".chapters.txt": "txt", ".chapters.json": "json"}
"""``uploads/<name>.chapters.txt`` (Audacity labels) or ``.chapters.json`` (Podcasting 2.0)
beside an upload ``<name>``: the producer's chapter marks for it, never audio."""


def is_chapter_sidecar(object_name: str) -> bool:
    return object_name.lower().endswith(tuple(CHAPTER_SIDECAR_FORMATS))


def chapter_sidecar_names(object_name: str) -> list[tuple[str, str]]:
    """``(sidecar name, format)`` an upload's chapter marks may have, preferred first:
    ``show.mp3.chapters.txt`` before ``show.chapters.txt``."""
    stem, _ = _stem_and_ext(object_name)
    folder = object_name[: len(object_name) - len(object_name.replace("\\", "/").rsplit("/", 1)[-1])]
    bases = dict.fromkeys([object_name, folder + stem])
    return [(base + suffix, fmt) for base in bases for suffix, fmt in CHAPTER_SIDECAR_FORMATS.items()]


def upload_key(object_name: str) -> str:
    return UPLOADS_PREFIX + object_name


def episode_prefix(episode_id: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", episode_id):
        raise ValueError(f"not an episode id: {episode_id!r}")
    return f"{EPISODES_PREFIX}{episode_id}/"


def episode_key(episode_id: str, filename: str) -> str:
    return episode_prefix(episode_id) + filename


def raw_key(episode_id: str, object_name: str) -> str:
    return episode_key(episode_id, f"raw.{raw_extension(object_name)}")


def printable(name: str) -> str:
    """A name safe to show and store as text: control and bidi characters escaped."""
    return "".join(
        ch if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co", "Cn"} else f"\\u{ord(ch):04x}"
        for ch in name
    )
