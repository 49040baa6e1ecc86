"""The edit, for review: what ``cleaned_audio`` removed as a table, a picture and files an
editor opens, all beside the episode::

    episodes/<ep>/edit.png            the picture (artifact ``edit_image``)
    episodes/<ep>/edit_sketch.json    the raw audio reduced for drawing, so that
                                      ``final_episode`` redraws the picture after a purge
    episodes/<ep>/cut_labels.txt      Audacity label track, raw timeline (``cut_labels``)
    episodes/<ep>/cleaned.edl         CMX 3600 EDL of the cleaned timeline (``cut_edl``)

``cleaned_audio`` writes all four; ``final_episode`` draws the picture again with the final
episode's loudness. The picture also goes into the step's metadata as a markdown image with
a ``data:`` URI, so the Dagster UI shows it without any server.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_audio.cut_exports import (
    EdlError,
    RemovedSpanReview,
    audacity_labels,
    cmx3600_edl,
    review_removed_spans,
)
from pod_audio.cuts import CutList
from pod_audio.edit_image import AudioSketch, draw_edit_image, sketch_audio
from pod_audio.transcript import Transcript
from pod_resources.media_links import MediaLinks, links_metadata
from pod_resources.storage import ObjectStore

EDIT_IMAGE = layout.EDIT_IMAGE
EDIT_SKETCH = layout.EDIT_SKETCH
CUT_LABELS = layout.CUT_LABELS
CUT_EDL = layout.CUT_EDL
REVIEW_ARTIFACTS: dict[str, str] = {
    "edit_image": EDIT_IMAGE,
    "cut_labels": CUT_LABELS,
    "cut_edl": CUT_EDL,
}
"""Artifact name → file name under ``episodes/<ep>/``."""
TABLE_ROWS = 200
_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class ReviewFiles:
    """What :func:`write_edit_review` stored: artifact name → key, and the metadata to show."""

    keys: dict[str, str]
    metadata: dict[str, dg.MetadataValue]


def review_table(reviews: list[RemovedSpanReview]) -> dg.TableMetadataValue:
    """The removed spans as the UI's table: where, why, which words, how sure."""
    columns = [
        ("number", "int"), ("start_s", "float"), ("end_s", "float"), ("duration_s", "float"),
        ("reason", "string"), ("words", "string"), ("confidence", "float"),
        ("before", "string"), ("after", "string"), ("cleaned_at_s", "float"),
    ]
    records = [
        dg.TableRecord({
            "number": r.number, "start_s": round(r.start_s, 3), "end_s": round(r.end_s, 3),
            "duration_s": round(r.duration_s, 3), "reason": r.reason, "words": r.words,
            "confidence": r.confidence, "before": r.before, "after": r.after,
            "cleaned_at_s": round(r.cleaned_at_s, 3),
        })
        for r in reviews[:TABLE_ROWS]
    ]
    return dg.MetadataValue.table(
        records=records,
        schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns]),
    )


def image_markdown(png: bytes, *, alt: str) -> dg.MarkdownMetadataValue:
    """A PNG as a markdown image with a ``data:`` URI (shown inline by the Dagster UI)."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def write_edit_review(
    store: ObjectStore,
    *,
    episode_id: str,
    title: str,
    raw_path: Path,
    raw_name: str,
    channels: int,
    cut_list: CutList,
    transcript: Transcript,
    links: MediaLinks,
) -> ReviewFiles:
    """Store the picture, its sketch, the label track and the EDL of one cleaning; return
    their keys and the metadata entries (table, inline picture, links) for the UI."""
    reviews = review_removed_spans(cut_list, transcript.words)
    sketch = sketch_audio(raw_path)
    png = draw_edit_image(raw=sketch, cut_list=cut_list, title=f"{title}: what cleaning removed")
    keys = {name: layout.episode_key(episode_id, file) for name, file in REVIEW_ARTIFACTS.items()}
    store.write_bytes(layout.episode_key(episode_id, EDIT_SKETCH), sketch.to_json().encode(),
                      content_type="application/json")
    store.write_bytes(keys["edit_image"], png, content_type="image/png")
    store.write_bytes(keys["cut_labels"], audacity_labels(reviews).encode(), content_type=_TEXT)
    metadata: dict[str, dg.MetadataValue] = {
        "cut_list": review_table(reviews),
        "edit_image": image_markdown(png, alt=f"{episode_id}: the edit"),
    }
    try:
        edl = cmx3600_edl(cut_list, title=f"{episode_id} cleaned", clip_name=raw_name, channels=channels)
        store.write_bytes(keys["cut_edl"], edl.encode(), content_type=_TEXT)
    except EdlError as exc:
        del keys["cut_edl"]
        metadata["cut_edl"] = dg.MetadataValue.text(f"no EDL: {exc}")
    return ReviewFiles(keys=keys, metadata={**metadata, **links_metadata(store, links, keys)})


def redraw_with_final(
    store: ObjectStore,
    *,
    episode_id: str,
    title: str,
    final_path: Path,
    final_offset_s: float,
    numbers: str,
    links: MediaLinks,
) -> dict[str, dg.MetadataValue]:
    """Draw the picture again with the final episode's loudness (after) beside the raw's
    (before), from the stored sketch and cut list; nothing when the episode has no sketch
    (cleaned before pictures existed)."""
    sketch_key = layout.episode_key(episode_id, EDIT_SKETCH)
    if not store.exists(sketch_key):
        return {}
    raw = AudioSketch.from_json(store.read_bytes(sketch_key))
    cut_list = CutList.from_json(store.read_bytes(layout.episode_key(episode_id, layout.CUT_LIST)))
    png = draw_edit_image(raw=raw, cut_list=cut_list, title=f"{title}: the edit and the mastering",
                          final=sketch_audio(final_path), final_offset_s=final_offset_s,
                          numbers=numbers)
    key = layout.episode_key(episode_id, EDIT_IMAGE)
    store.write_bytes(key, png, content_type="image/png")
    return {
        "edit_image": image_markdown(png, alt=f"{episode_id}: the edit"),
        **links_metadata(store, links, {"edit_image": key}),
    }
