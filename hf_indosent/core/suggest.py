"""Near misses: the valid name closest to a misspelt one, for every "unknown ..." message.

``learnig_rate`` in a recipe, ``--learnin_rate`` on the command line, ``hf-indosent trian``: a message that names
the unknown word and stops there leaves the user to search ``--help``; one that says ``did you mean --learning_rate?``
is fixed in one edit. Standard library only (:mod:`difflib`), so usage errors answer before any heavy import.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

CUTOFF = 0.6
"""difflib's similarity ratio a candidate needs (its default): one or two letters off in a word of five or more."""


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name``, or ``None`` when none is close.

    Leading dashes are not compared (every flag shares them, which would make any two flags look alike) and case
    does not count (``Train`` is ``train`` misspelt); the candidate is returned as written."""
    by_key: dict[str, str] = {}
    for candidate in candidates:
        by_key.setdefault(_key(candidate), candidate)
    found = difflib.get_close_matches(_key(name), list(by_key), n=1, cutoff=CUTOFF)
    return by_key[found[0]] if found else None


def did_you_mean(names: str | Sequence[str], candidates: Iterable[str], quote: bool = False) -> str:
    """The suffix of an "unknown ..." message: ``" (did you mean --learning_rate?)"`` for one name, ``" (did you mean
    --learning_rate for --learnin_rate, --seed for --seeed?)"`` for several, ``""`` when none is close.

    ``quote`` writes names as ``repr`` (``'learning_rate'``), as messages quote recipe keys and values."""
    names = [names] if isinstance(names, str) else list(names)
    candidates = list(candidates)
    show = repr if quote else str
    pairs = [(name, found) for name in names if (found := closest(name, candidates)) is not None]
    if not pairs:
        return ""
    if len(names) == 1:
        return f" (did you mean {show(pairs[0][1])}?)"
    return f" (did you mean {', '.join(f'{show(found)} for {show(name)}' for name, found in pairs)}?)"


def _key(name: str) -> str:
    return name.lstrip("-").casefold()
