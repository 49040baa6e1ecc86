"""``chapters``: the producer's chapter marks carried through the cuts onto the final
timeline, written as ``chapters.json`` (Podcasting 2.0) and as ID3 ``CHAP``/``CTOC`` frames
in ``episode.mp3``, with a blocking check that the two agree within 1 ms.

Where marks come from (:func:`take_marks`): ``uploads/<name>.chapters.txt|.json`` beside the
upload (``pod ingest FILE --chapters MARKS`` puts them there; a producer may drop them there
before or after the audio). The chapters step moves them to ``episodes/<ep>/chapter_marks.*``
(copied, then the sidecar removed), so a later run, and a reprocess, reads them from there;
a newer sidecar replaces them. A marks file that does not parse fails this step with the
line it stumbled on; the marks, the audio and everything else stay as they are.
"""

import json
import tempfile
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.episode_asset import episode_asset, step_name
from pod_assets.publish.subtitles import intro_offset_s, subtitles
from pod_assets.status import episode_step
from pod_audio.chapters import Chapter, ChapterMarksError, carry_through_cuts, parse_marks, to_chapters_json
from pod_audio.cuts import CutList
from pod_audio.io import probe
from pod_audio.tags import read_chapters, write_chapters
from pod_resources.catalog import CatalogResource, Episode
from pod_resources.storage import InvalidKeyError, ObjectStore

CHAPTERS_CHECK = "chapters_match_id3"
_TOLERANCE_MS = 1


def stored_marks_key(store: ObjectStore, episode_id: str) -> tuple[str, str] | None:
    """``(key, format)`` of the episode's stored marks, if any."""
    for fmt in ("txt", "json"):
        key = layout.episode_key(episode_id, f"{layout.CHAPTER_MARKS}.{fmt}")
        if store.exists(key):
            return key, fmt
    return None


def take_marks(store: ObjectStore, episode: Episode) -> tuple[str, str] | None:
    """Move a sidecar of the episode's upload into ``episodes/<ep>/chapter_marks.<fmt>``
    (replacing older marks) and return the stored marks' ``(key, format)``, or ``None``."""
    for name, fmt in layout.chapter_sidecar_names(episode.source_name):
        sidecar = layout.upload_key(name)
        try:
            info = store.stat(sidecar)
        except InvalidKeyError:
            continue  # a name this store cannot address (too long with the suffix): no sidecar
        if info is None:
            continue
        key = layout.episode_key(episode.episode_id, f"{layout.CHAPTER_MARKS}.{fmt}")
        store.write_bytes(key, store.read_bytes(sidecar), content_type="text/plain; charset=utf-8")
        for other in ("txt", "json"):
            if other != fmt and store.exists(stale := layout.episode_key(episode.episode_id, f"{layout.CHAPTER_MARKS}.{other}")):
                store.delete(stale)
        store.delete(sidecar, if_generation_match=info.generation)
        return key, fmt
    return stored_marks_key(store, episode.episode_id)


def chapter_problems(chapters_json: dict, id3: list, *, duration_s: float) -> list[str]:
    """What is wrong with ``chapters.json`` (parsed) against the MP3's ID3 chapters."""
    items = chapters_json.get("chapters", [])
    starts = [item["startTime"] for item in items]
    problems = []
    if chapters_json.get("version") != "1.2.0":
        problems.append(f"chapters.json version is {chapters_json.get('version')!r}, not 1.2.0")
    if starts and starts[0] != 0:
        problems.append(f"the first chapter starts at {starts[0]} s, not 0")
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        problems.append("chapter starts are not strictly ascending")
    if starts and starts[-1] > duration_s:
        problems.append(f"a chapter starts at {starts[-1]} s, past the end ({duration_s:.3f} s)")
    if len(id3) != len(items):
        problems.append(f"episode.mp3 has {len(id3)} CHAP frames, chapters.json {len(items)} chapters")
    for i, (item, frame) in enumerate(zip(items, id3, strict=False), start=1):
        if abs(frame.start_ms - item["startTime"] * 1000) > _TOLERANCE_MS or frame.title != item["title"]:
            problems.append(f"chapter {i}: ID3 {frame.start_ms} ms {frame.title[:40]!r}, "
                            f"chapters.json {item['startTime']} s {item['title'][:40]!r}")
    return problems[:20]


def _embed(store: ObjectStore, episode_id: str, chapters: list[Chapter]) -> tuple[list, float, int]:
    """Write the chapters into the stored MP3's ID3 tag; its chapters as read back, its
    duration and its new size."""
    mp3_key = layout.episode_key(episode_id, layout.FINAL_EPISODE)
    with tempfile.TemporaryDirectory(prefix="pod-chapters-") as scratch:
        path = Path(scratch) / layout.FINAL_EPISODE
        store.read_to_path(mp3_key, path)
        duration_s = probe(path, decode_check=False).duration_s
        write_chapters(path, [(c.start_s, c.title) for c in chapters], duration_s=duration_s)
        stored = store.write_file(mp3_key, path, content_type="audio/mpeg")
        return read_chapters(path), duration_s, stored.size


@episode_asset(
    deps=[subtitles],
    kinds={"json"},
    checks={
        CHAPTERS_CHECK: "chapters.json (1.2.0) ascends from 0 within the episode, and the MP3's "
                        "CHAP/CTOC frames give the same chapters within 1 ms.",
    },
)
def chapters(
    context: dg.AssetExecutionContext, store: ObjectStore, catalog: CatalogResource
) -> dg.MaterializeResult:
    """Chapters on the final timeline: the producer's marks (raw timeline) carried through
    the cut list (a start inside a removed span moves to its end) and shifted by the intro,
    as ``chapters.json`` and as ID3 chapter frames in ``episode.mp3``. No marks, no chapters."""
    cat = catalog.get_catalog()
    with episode_step(context, cat, step=step_name(context)) as step:
        episode_id = step.episode_id
        marks = take_marks(store, step.episode)
        key = layout.episode_key(episode_id, layout.CHAPTERS)
        if marks is None:
            if store.exists(key):
                store.delete(key)
            cat.record_artifacts(episode_id, {"chapters": None})
            return dg.MaterializeResult(
                metadata={"chapters": dg.MetadataValue.int(0), "marks": dg.MetadataValue.text("none")},
                check_results=[step.check(CHAPTERS_CHECK, passed=True, description="no chapter marks")],
            )
        marks_key, fmt = marks
        cut_list = CutList.from_json(store.read_bytes(layout.episode_key(episode_id, layout.CUT_LIST)))
        try:
            raw = parse_marks(store.read_bytes(marks_key), fmt=fmt, source_duration_s=cut_list.source_duration_s)
        except ValueError as exc:
            raise type(exc)(f"chapter marks {marks_key}: {exc}") from None
        final = carry_through_cuts(raw, cut_list, offset_s=intro_offset_s(step.episode))
        store.write_bytes(key, to_chapters_json(final).encode("utf-8"), content_type="application/json+chapters")
        id3, duration_s, size = _embed(store, episode_id, final)
        cat.record_artifacts(episode_id, {"chapters": store.uri(key)})
        cat.record_metrics(episode_id, {"final_bytes": size, "chapters": len(final)})
        problems = chapter_problems(json.loads(store.read_bytes(key)), id3, duration_s=duration_s)
        check = step.check(CHAPTERS_CHECK, passed=not problems,
                           description="; ".join(problems) or f"{len(final)} chapters agree (±1 ms)")
        return dg.MaterializeResult(
            metadata={
                "chapters": dg.MetadataValue.int(len(final)),
                "marks": dg.MetadataValue.text(marks_key),
                "table": dg.MetadataValue.md(
                    "| start | title |\n|---|---|\n"
                    + "\n".join(f"| {c.start_s:.3f} s | {c.title[:80].replace('|', '/')} |" for c in final[:50])
                ),
                "uri": dg.MetadataValue.url(store.uri(key)),
            },
            check_results=[check],
        )


def ingest_marks(store: ObjectStore, upload_name: str, marks_path: Path) -> str:
    """Store a marks file as the sidecar of upload ``upload_name`` after checking that it
    parses (times against the recording are checked by the chapters step); its key.

    Raises:
        ChapterMarksError: the file's format is unknown or a line is malformed.
    """
    suffix = marks_path.suffix.lower()
    fmt = {".txt": "txt", ".json": "json"}.get(suffix)
    if fmt is None:
        raise ChapterMarksError(f"{marks_path.name}: use .txt (Audacity labels) or .json (Podcasting 2.0 chapters)")
    data = marks_path.read_bytes()
    parse_marks(data, fmt=fmt)
    key = layout.upload_key(f"{upload_name}.chapters.{fmt}")
    store.write_bytes(key, data, content_type="text/plain; charset=utf-8")
    return key
