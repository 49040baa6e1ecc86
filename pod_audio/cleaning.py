"""Cleaning one recording in one call: its pauses found, the cut list decided, the kept audio
rendered and the transcript moved onto the cleaned timeline.

Invariants: the cleaned transcript is exactly :func:`pod_audio.cuts.remap_transcript` of the
transcript through the cut list, and the rendered file plays ``cut_list.kept_duration_s``
(what ``cleaned_audio``'s checks hold the stored outputs to).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Unpack

from pod_audio.cut_builder import CutSettings, build_cut_list
from pod_audio.cuts import CutList, remap_transcript
from pod_audio.render import RenderReport, render_cut_list
from pod_audio.silence import SilenceReport, detect_silences_in_file
from pod_audio.transcript import Transcript


@dataclass(frozen=True)
class Cleaning:
    """What :func:`clean_recording` decided and wrote."""

    silence: SilenceReport
    cut_list: CutList
    rendered: RenderReport
    cleaned: Transcript
    """The transcript on the cleaned timeline."""


def clean_recording(
    raw_path: str | os.PathLike[str],
    transcript: Transcript,
    *,
    out_path: str | os.PathLike[str],
    min_silence_ms: float,
    **cut_settings: Unpack[CutSettings],
) -> Cleaning:
    """Write ``raw_path`` with fillers removed and long pauses shortened to ``out_path``:
    pauses of at least ``min_silence_ms``, cut as :func:`pod_audio.cut_builder.build_cut_list`
    decides with ``cut_settings``."""
    silence = detect_silences_in_file(raw_path, min_silence_ms=min_silence_ms)
    cut_list = build_cut_list(
        words=transcript.words, silences=silence.silences, duration_s=silence.duration_s, **cut_settings
    )
    rendered = render_cut_list(source_path=raw_path, cut_list=cut_list, out_path=out_path)
    return Cleaning(
        silence=silence, cut_list=cut_list, rendered=rendered, cleaned=remap_transcript(transcript, cut_list)
    )
