"""Transcript types shared by the recogniser, the cut list and the remap.

A transcript is a sequence of :class:`Word` with times in seconds from the start of the
audio it describes. It serialises to the JSON stored as ``transcript.json`` and
``cleaned_transcript.json``::

    {"engine": "pocketsphinx", "engine_version": "5.1.1", "duration_s": 11.0,
     "words": [{"text": "and", "start_s": 0.32, "end_s": 0.51,
                "confidence": 0.93, "is_filler": false}, ...]}
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

CANONICAL_FILLERS: dict[str, str] = {
    "um": "um", "umm": "um", "erm": "um",
    "uh": "uh", "uhh": "uh", "eh": "uh",
    "er": "er",
    "ah": "ah", "ahh": "ah",
    "hmm": "hmm", "hm": "hmm", "mm": "hmm",
}  # fmt: skip
"""Spellings of a hesitation -> the five fillers a transcript names ("um", "uh", "er", "ah",
"hmm"). Not "mhm", "mm-hmm" or "uh-huh": those are answers ("Did you go?" "Mhm."), and
cut, the answer is gone."""
FILLER_WORDS: frozenset[str] = frozenset(CANONICAL_FILLERS)


def canonical_filler(text: str) -> str | None:
    """The filler ``text`` spells ("Umm" -> "um", "hm" -> "hmm", a drawn-out "Ahhh" or
    "errrr" too), or ``None`` for other words ("so", "Soooo")."""
    spelled = text.strip().lower()
    if spelled in CANONICAL_FILLERS:
        return CANONICAL_FILLERS[spelled]
    if not re.search(r"(.)\1\1", spelled):
        return None  # "err" is a word; only a letter held three times over is drawn out
    for candidate in (re.sub(r"(.)\1{2,}", r"\1\1", spelled), re.sub(r"(.)\1+", r"\1", spelled)):
        if candidate in CANONICAL_FILLERS:
            return CANONICAL_FILLERS[candidate]
    return None


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start_s: float
    end_s: float
    confidence: float = 1.0
    is_filler: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def shifted(self, offset_s: float) -> Word:
        return replace(self, start_s=self.start_s + offset_s, end_s=self.end_s + offset_s)


@dataclass(frozen=True, slots=True)
class Transcript:
    words: tuple[Word, ...]
    duration_s: float
    engine: str
    engine_version: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def speech_s(self) -> float:
        return sum(w.duration_s for w in self.words)

    @property
    def filler_count(self) -> int:
        return sum(1 for w in self.words if w.is_filler)

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "engine_version": self.engine_version,
            "duration_s": self.duration_s,
            "words": [asdict(w) for w in self.words],
            **({"extra": self.extra} if self.extra else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        return cls(
            words=tuple(Word(**w) for w in data["words"]),
            duration_s=float(data["duration_s"]),
            engine=str(data["engine"]),
            engine_version=str(data["engine_version"]),
            extra=dict(data.get("extra", {})),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Transcript:
        return cls.from_dict(json.loads(text))
