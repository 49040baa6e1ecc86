"""The measured steps, each run in a fresh process by :mod:`bench.run`.

``python -m bench.steps <step> [options]`` does one thing and prints one JSON line on
stdout: what it found (so runs can be checked against each other) and ``work_s``, the wall
time of the work itself without interpreter start-up and imports.

Steps:

``silence``
    :func:`pod_audio.silence.detect_silences_in_file`, as ``cleaned_audio`` calls it.
``pydub_silence``
    pydub: ``AudioSegment.from_file`` then ``detect_nonsilent`` (``seek_step=1``, the default).
``clean``
    the library path of the ``cleaned_audio`` asset: detect silences, build the cut list from
    the transcript, render the cut list to FLAC, remap the transcript, write the cut list
    and the cleaned transcript as JSON.
``final``
    the library path of the ``final_episode`` asset: ``render_final`` to a tagged MP3 (it
    measures the decoded MP3 itself).
``transcribe``
    the ``transcript`` step's library call: :func:`pod_audio.asr.transcribe` with
    ``--engine whisper`` (the product default: Whisper ``tiny.en``, forced alignment,
    fillers between the words; loading the model is part of the step) or
    ``--engine pocketsphinx`` (the baseline, ``recogniser=PocketsphinxRecogniser()``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _silence(args: argparse.Namespace) -> dict[str, Any]:
    from pod_audio.silence import detect_silences_in_file

    report = detect_silences_in_file(args.input, min_silence_ms=args.min_silence_ms)
    return {
        "silences": len(report.silences),
        "silent_s": round(report.silent_s, 2),
        "threshold_dbfs": round(report.threshold_dbfs, 2),
        "duration_s": round(report.duration_s, 3),
    }


def _pydub_silence(args: argparse.Namespace) -> dict[str, Any]:
    from pydub import AudioSegment
    from pydub.silence import detect_nonsilent

    segment = AudioSegment.from_file(args.input)
    loaded_s = time.perf_counter() - _T0
    ranges = detect_nonsilent(
        segment, min_silence_len=int(args.min_silence_ms), silence_thresh=args.threshold_dbfs
    )
    return {"nonsilent_ranges": len(ranges), "load_s": round(loaded_s, 3)}


def _clean(args: argparse.Namespace) -> dict[str, Any]:
    from pod_audio.cut_builder import build_cut_list
    from pod_audio.cuts import remap_transcript
    from pod_audio.render import render_cut_list
    from pod_audio.silence import detect_silences_in_file
    from pod_audio.transcript import Transcript

    out = Path(args.output)
    source = Transcript.from_json(Path(args.transcript).read_text())
    silence = detect_silences_in_file(args.input, min_silence_ms=args.min_silence_ms)
    cut_list = build_cut_list(
        words=source.words,
        silences=silence.silences,
        duration_s=silence.duration_s,
        max_pause_ms=700.0,
        margin_ms=120.0,
        crossfade_ms=20.0,
        remove_fillers=True,
    )
    rendered = render_cut_list(source_path=args.input, cut_list=cut_list, out_path=out)
    cleaned = remap_transcript(source, cut_list)
    out.with_name(out.stem + ".cut_list.json").write_text(cut_list.to_json())
    out.with_name(out.stem + ".transcript.json").write_text(cleaned.to_json())
    return {
        "cleaned_s": round(rendered.duration_s, 3),
        "cuts": rendered.cuts,
        "removed_s": round(cut_list.removed_s, 2),
        "fillers_removed": source.filler_count - cleaned.filler_count,
    }


def _final(args: argparse.Namespace) -> dict[str, Any]:
    from pod_audio.mastering import render_final
    from pod_audio.tags import EpisodeTags

    report = render_final(
        main_path=args.input,
        out_path=args.output,
        tags=EpisodeTags(title="Benchmark episode", show="Bench", date="2026-11-29", duration_s=0.0),
    )
    return {
        "renders": report.renders,
        "gain_db": round(report.gain_db, 2),
        "lufs_out": round(report.lufs_out, 2),
        "true_peak_dbtp": round(report.true_peak_dbtp, 2),
        "duration_s": round(report.duration_s, 3),
    }


def whisper_recogniser(  # noqa: ANN201
    model: str | None, beam_size: int | None, second_opinion_below: float | None = None
):
    """The product's Whisper engine with ``model``, ``beam_size`` and
    ``second_opinion_below`` where given (``None``: the product's default engine, built by
    :func:`pod_audio.asr.transcribe` itself)."""
    if not (model or beam_size or second_opinion_below is not None):
        return None
    from pod_audio.whisper import WhisperEngine, WhisperSettings

    given = {"model": model, "beam_size": beam_size, "second_opinion_below": second_opinion_below}
    return WhisperEngine(
        dataclasses.replace(WhisperSettings(), **{k: v for k, v in given.items() if v is not None})
    )


def _transcribe(args: argparse.Namespace) -> dict[str, Any]:
    from pod_audio import asr
    from pod_audio.pocketsphinx_engine import PocketsphinxRecogniser

    recogniser = (
        PocketsphinxRecogniser() if args.engine == "pocketsphinx"
        else whisper_recogniser(args.model, args.beam_size, args.second_opinion_below)
    )
    transcript = asr.transcribe(args.input, recogniser=recogniser)
    return {
        "engine": transcript.engine,
        "words": len(transcript.words),
        "fillers": transcript.filler_count,
        "chunks": transcript.extra.get("chunks"),
        "chunks_second_opinion": transcript.extra.get("chunks_second_opinion"),
        "duration_s": round(transcript.duration_s, 3),
    }


_STEPS = {
    "silence": _silence,
    "pydub_silence": _pydub_silence,
    "clean": _clean,
    "final": _final,
    "transcribe": _transcribe,
}
_IMPORTS = {
    "silence": ("pod_audio.silence",),
    "pydub_silence": ("pydub", "pydub.silence"),
    "clean": ("pod_audio.cut_builder", "pod_audio.cuts", "pod_audio.render", "pod_audio.silence",
              "pod_audio.transcript"),
    "final": ("pod_audio.loudness", "pod_audio.mastering", "pod_audio.tags"),
    "transcribe": ("pod_audio.asr", "pod_audio.align", "pod_audio.whisper", "pocketsphinx",
                   "faster_whisper"),
}
"""Imported before the clock starts, so ``work_s`` is the work alone."""
_T0 = 0.0


def main(argv: Sequence[str] | None = None) -> int:
    global _T0
    parser = argparse.ArgumentParser(prog="python -m bench.steps")
    parser.add_argument("step", choices=sorted(_STEPS))
    parser.add_argument("--input", required=True)
    parser.add_argument("--output")
    parser.add_argument("--transcript")
    parser.add_argument("--engine", choices=("whisper", "pocketsphinx"), default="whisper")
    parser.add_argument("--model", help="Whisper model (default: the product's, tiny.en)")
    parser.add_argument("--beam-size", type=int,
                        help="Whisper beam size (default: the product's, 5)")
    parser.add_argument("--second-opinion-below", type=float,
                        help="Whisper's second opinion threshold (default: the product's; "
                             "above 1 every chunk is heard by both models)")
    parser.add_argument("--min-silence-ms", type=float, default=300.0)
    parser.add_argument("--threshold-dbfs", type=float, default=-48.0)
    args = parser.parse_args(argv)
    for module in _IMPORTS[args.step]:
        importlib.import_module(module)
    _T0 = time.perf_counter()
    result = _STEPS[args.step](args)
    result["work_s"] = round(time.perf_counter() - _T0, 4)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
