"""Tests of :mod:`pod_audio.pronunciations`: a search's dictionary holds exactly CMUdict's
entries for its words, and an alignment with it equals one with all of CMUdict."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from pocketsphinx import get_model_path

from pod_audio import align, pronunciations
from pod_audio.transcript import Word
from tests.audio_factory import jfk_16k
from tests.speech_factory import SR

CMUDICT = os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict")


def _cmudict_lines(word: str) -> list[bytes]:
    with open(CMUDICT, "rb") as f:
        return [line for line in f if line.split(b" ", 1)[0].split(b"(")[0] == word.encode()]


@pytest.mark.parametrize("word", ["'bout", "a", "and", "for", "americans", "zwick", "uh", "hmm"])
def test_entries_are_cmudicts_lines_with_every_variant(word: str) -> None:
    assert pronunciations.entries(word) == _cmudict_lines(word)
    assert pronunciations.entries(word)


@pytest.mark.parametrize("word", ["", "zzzzzz", "hippopotamusx", "aaaaaaa", "fellowz"])
def test_a_word_cmudict_lacks_has_no_entries(word: str) -> None:
    assert pronunciations.entries(word) == []


def test_the_dictionary_file_holds_the_words_in_cmudicts_order_and_is_removed() -> None:
    with pronunciations.dictionary_for(["for", "and", "zzzzzz", "and"]) as path:
        with open(path, "rb") as f:
            written = f.read().splitlines(keepends=True)
    assert written == _cmudict_lines("and") + _cmudict_lines("for")
    assert not os.path.exists(path)


@contextmanager
def _all_of_cmudict(words: object) -> Iterator[str]:
    yield CMUDICT


def test_an_alignment_with_the_small_dictionary_equals_one_with_all_of_cmudict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    samples = jfk_16k()
    pcm = np.round(samples[: 5 * SR] * 32767).astype(np.int16)
    # Rough times, a word with two pronunciations ("and") and one CMUdict lacks (spelled).
    rough = [Word("And", 0.0, 0.6), Word("so,", 0.6, 1.4), Word("my", 2.8, 3.2),
             Word("fellow", 3.2, 3.8), Word("Americanz", 3.8, 4.6)]  # fmt: skip
    small = (align.align_words(pcm, rough), align.align_with_hesitations(pcm, rough))
    monkeypatch.setattr(align.pronunciations, "dictionary_for", _all_of_cmudict)
    full = (align.align_words(pcm, rough), align.align_with_hesitations(pcm, rough))
    assert small[0].fully_aligned
    assert small == full
