"""One spelling of a category, shared by the validator and the engine.

Categories come from two sources that never coordinated their spelling: the parent typing a policy
and the merchant's catalogue. Comparing them any other way than through this function would let
"Alcohol " slip past a block on "alcohol".
"""

from __future__ import annotations

import unicodedata

MAX_CATEGORY_LENGTH = 64
MAX_CATEGORIES = 200  # per list; bounds the work a single policy can ask of every decision


def normalize_category(category: str) -> str:
    """NFC, trimmed, lower case: "  Gift-Cards" -> "gift-cards".

    NFC first so a category typed with a combining accent equals the precomposed one a catalogue sends.
    """
    return unicodedata.normalize("NFC", category).strip().lower()
