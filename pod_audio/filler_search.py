"""The filler search of one chunk: where fillers are looked for, and the checks they pass.

Fillers are looked for only between the aligned words (:func:`fillers.fillers_between_words`),
in two passes:

1. **The plain alignment's gaps.** The transcript's words on their aligned spans
   (:func:`pod_audio.align.align_words`); each candidate must pass every check of
   :mod:`pod_audio.filler_checks`. One that the plain local re-alignment puts a word on
   may pass as in the second pass: set apart by quiet, and clear of the words aligned
   again locally with hesitations.
2. **Gaps only the alignment with hesitations shows.** The plain alignment often stretches a
   word over a filler the recogniser left out ("so" over "so, uh"), so the filler lies on the
   word and is never searched. Aligned again with an optional hesitation between any two
   words (:func:`pod_audio.align.align_with_hesitations`), the filler gets a slot of its own.
   Those slots also take the held end of a drawn-out word, so such a candidate must in
   addition be set apart from its words by quiet (:func:`filler_checks.set_apart`), the word
   it lay on moves to where the alignment with hesitations put it (clear of the filler, with
   any neighbour it runs into moved along, and it must still look like a word there), and
   the local re-alignment check aligns with hesitations too.

Only a candidate the voice activity detector hears as speech is a hesitation
(:func:`filler_checks.spoken`): a tune's notes are as steady as a held "hmm".

A candidate on which the recogniser itself wrote a filler ("uh") skips the checks on the
alignment around it, not those on its sound. Every candidate of both passes is then
recognised again with and without it (:func:`filler_checks.missed_words`; for a filler the
recogniser wrote, only a cut that changes the words heard keeps it); the transcript
gets the fillers that pass (two that nearly touch joined into one:
:func:`fillers.join_touching_fillers`) and, for the second pass, the moved words. Times are
seconds from the chunk's first sample; audio is 16 kHz mono ``int16``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from pod_audio import filler_checks, fillers
from pod_audio.align import align_with_hesitations
from pod_audio.filler_candidates import overlap
from pod_audio.intervals import Interval
from pod_audio.transcript import Word
from pod_audio.vad import speech_spans

if TYPE_CHECKING:
    from pod_audio.asr import Recogniser

__all__ = ["find_fillers", "make_room"]


def find_fillers(
    pcm: np.ndarray,
    words: list[Word],
    *,
    aligned: Sequence[bool],
    heard: Sequence[Word],
    recogniser: Recogniser,
) -> list[Word]:
    """``words`` (a chunk's aligned words, in the order of ``heard``, the recogniser's own)
    with the fillers that pass every check merged in; a word a filler of the second pass
    lay on is put where the alignment with hesitations placed it."""
    loose = _loose_words(pcm, words, aligned=aligned, heard=heard)
    speech = speech_spans(pcm)
    found = [
        f
        for f in fillers.fillers_between_words(pcm, words, aligned=aligned)
        if _passes(pcm, f, words, heard, loose=loose, speech=speech)
    ]
    room, exposed = _exposed_fillers(pcm, words, loose, heard=heard, found=found, speech=speech)
    candidates = [*found, *exposed]
    spelled = [_spelled_there(f, words) for f in candidates]
    missed = (
        filler_checks.missed_words(pcm, candidates, room, recogniser, spelled=spelled)
        if candidates
        else []
    )
    kept: list[Word] = []
    for filler, word_there in zip(candidates, missed):
        if word_there:
            continue
        if filler in exposed:
            # Room again, now without the moves of candidates the recognition turned down.
            moved = make_room(words, filler, loose)
            if moved is None:
                continue
            words = moved
        kept.append(filler)
    return fillers.merge_fillers(words, fillers.join_touching_fillers(kept, words))


def _passes(
    pcm: np.ndarray,
    filler: Word,
    words: Sequence[Word],
    heard: Sequence[Word],
    *,
    loose: Sequence[Word],
    speech: Sequence[Interval],
    exposed: bool = False,
) -> bool:
    """The checks of :mod:`pod_audio.filler_checks` short of recognition. A candidate in a
    gap of the plain alignment that the plain local re-alignment puts a word on may still
    pass as one the alignment with hesitations shows: set apart by quiet, and clear of
    the words when aligned again locally with hesitations. Where the recogniser itself
    wrote a filler on the candidate, the checks on the alignment around it (which look for
    a misplaced word's sound) are not asked: the gap is the hesitation it heard."""
    if not filler_checks.spoken(filler, speech):
        return False
    if not filler_checks.neighbours_look_right(filler, words, heard, pcm):
        return False
    if filler_checks.word_edge(filler, words):
        return False
    if filler_checks.part_of_a_word(pcm, filler, words):
        return False
    if _spelled_there(filler, words):
        return True
    if not exposed and filler_checks.fits_local_alignment(pcm, filler, words):
        return True
    return (
        bool(loose)
        and filler_checks.set_apart(pcm, filler, loose)
        and filler_checks.fits_local_alignment(pcm, filler, words, hesitations=True)
    )


def _spelled_there(filler: Word, words: Sequence[Word]) -> bool:
    """Whether the recogniser itself wrote a filler ("uh", "um") on the candidate."""
    return any(w.is_filler and _shared(w, filler) > 0 for w in words)


def _loose_words(
    pcm: np.ndarray, words: Sequence[Word], *, aligned: Sequence[bool], heard: Sequence[Word]
) -> list[Word]:
    """The words as the alignment with hesitations places them; empty when either alignment
    left a word unplaced (the second pass then does not run)."""
    if not words or not all(aligned):
        return []
    loose = align_with_hesitations(pcm, heard)
    return [fillers.flag_spelled_filler(w) for w in loose.words] if loose.fully_aligned else []


def _exposed_fillers(
    pcm: np.ndarray,
    words: list[Word],
    loose: Sequence[Word],
    *,
    heard: Sequence[Word],
    found: Sequence[Word],
    speech: Sequence[Interval],
) -> tuple[list[Word], list[Word]]:
    """The second pass: candidates in gaps only the alignment with hesitations (``loose``)
    shows, each checked against the words moved to make room for it and the candidates
    before it. Returns the words with room made for every candidate kept, and those
    candidates."""
    room: list[Word] = list(words)
    exposed: list[Word] = []
    if not loose:
        return room, exposed
    for filler in fillers.fillers_between_words(pcm, loose):
        if any(overlap(f.start_s, f.end_s, filler.start_s, filler.end_s) > 0 for f in found):
            continue
        if not any(
            not w.is_filler and _shared(w, filler) > fillers.MAX_WORD_OVERLAP_S for w in room
        ):
            continue  # in a gap of the plain alignment too: the first pass judged it
        moved = make_room(room, filler, loose)
        if moved is None or not _passes(
            pcm, filler, moved, heard, loose=loose, speech=speech, exposed=True
        ):
            continue
        room = moved
        exposed.append(filler)
    return room, exposed


def make_room(words: Sequence[Word], filler: Word, loose: Sequence[Word]) -> list[Word] | None:
    """``words`` with each non-filler word that ``filler`` overlaps by more than the hard
    rule allows put on its span in the alignment with hesitations (``loose``, same order),
    where that span is clear of the filler; ``None`` when it is not (the filler would take
    part of a word).

    A moved word that runs into a neighbour takes the neighbour along: the plain alignment
    that stretched "are" over the "uh" before it squeezed "talking" after it, and the
    alignment with hesitations has both on their own sound. Each word taken along moves to
    its span in ``loose`` too, and must stay clear of the filler; the run stops at the first
    word the moved ones no longer touch. ``None`` where a word taken along is a filler the
    recogniser wrote, or where the moved words still run into each other."""
    out = list(words)
    moved: set[int] = set()

    def move(i: int) -> bool:
        if i in moved or out[i].is_filler:
            return False
        out[i] = replace(out[i], start_s=loose[i].start_s, end_s=loose[i].end_s)
        moved.add(i)
        return _shared(out[i], filler) <= fillers.MAX_WORD_OVERLAP_S

    for i, word in enumerate(words):
        if not word.is_filler and _shared(word, filler) > fillers.MAX_WORD_OVERLAP_S:
            if not move(i):
                return None
    for i in sorted(moved):
        j = i + 1
        while j < len(out) and out[j - 1].end_s > out[j].start_s and j not in moved:
            if not move(j):
                return None
            j += 1
        j = i - 1
        while j >= 0 and out[j].end_s > out[j + 1].start_s and j not in moved:
            if not move(j):
                return None
            j -= 1
    if any(a.end_s > b.start_s for a, b in zip(out, out[1:])):
        return None
    return out


def _shared(a: Word, b: Word) -> float:
    return overlap(a.start_s, a.end_s, b.start_s, b.end_s)
