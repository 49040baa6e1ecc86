"""Tests of :mod:`bench.filler_funnel`: which stage of the filler search lost a true filler."""

from __future__ import annotations

from bench.corpus import Item, TrueFiller
from bench.filler_funnel import Recorder, lost_at
from pod_audio import filler_checks, fillers
from pod_audio.transcript import Word

UM = TrueFiller(2.0, 2.4, "um", "paused")
UH = TrueFiller(5.0, 5.3, "uh", "tight")
ER = TrueFiller(8.0, 8.4, "er", "paused")


def _item(*found: TrueFiller) -> Item:
    return Item(path="x.wav", duration_s=10.0, fillers=found, voice="test")


def test_the_recorder_notes_each_verdict_and_puts_the_checks_back() -> None:
    original, original_pass = filler_checks.word_edge, fillers.fillers_between_words
    words = [Word("so", 1.0, 1.5)]
    with Recorder() as recorder:
        assert filler_checks.word_edge is not original
        # Touches "so", whose last letter is voiced: turned down as the word's edge.
        assert filler_checks.word_edge(Word("uh", 1.51, 1.7, is_filler=True), words)
        assert not filler_checks.word_edge(Word("uh", 2.0, 2.4, is_filler=True), words)
    assert filler_checks.word_edge is original
    assert fillers.fillers_between_words is original_pass
    assert recorder.events == [
        {"kind": "check", "stage": "word_edge", "span": [1.51, 1.7], "passed": False},
        {"kind": "check", "stage": "word_edge", "span": [2.0, 2.4], "passed": True},
    ]


def test_each_missed_filler_is_put_down_to_the_stage_that_lost_it() -> None:
    events = [
        {"kind": "pass", "words": [[0.5, 1.9], [4.9, 5.35], [8.5, 9.0]],
         "kept": [[2.0, 2.4]], "scored": [[2.0, 2.4, 0.9], [7.9, 8.3, 0.2]]},
        {"kind": "check", "stage": "neighbours", "span": [2.0, 2.4], "passed": True},
        {"kind": "check", "stage": "local_alignment", "span": [2.0, 2.4], "passed": False},
        {"kind": "check", "stage": "set_apart", "span": [2.0, 2.4], "passed": False},
    ]
    row = {"funnel": events, "chunks": 1}
    # The "um": turned down last by set_apart; the "uh": under a word; the "er": scored low.
    assert lost_at(_item(UM, UH, ER), [], row) == ["set_apart", "under_a_word", "below_threshold"]
    # A matched filler is found whatever the events say.
    assert lost_at(_item(UM, UH, ER), [UM], row) == ["found", "under_a_word", "below_threshold"]
    # Nothing near it at all, and no word over it.
    assert lost_at(_item(TrueFiller(3.0, 3.3, "uh", "paused")), [], row) == ["no_candidate"]
    # Every check passed and still not kept.
    recognised = {"kind": "check", "stage": "recognised_again", "span": [2.0, 2.4], "passed": True}
    passed = [*events[:2], recognised]
    assert lost_at(_item(UM), [], {"funnel": passed, "chunks": 1}) == ["other"]
    # Times of a file of several chunks are not the file's: not attributed.
    assert lost_at(_item(UM), [], {"funnel": events, "chunks": 2}) == ["multi_chunk"]
