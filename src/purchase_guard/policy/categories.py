r"""One spelling of a category, shared by the validator and the engine.

Categories come from two sources that never coordinated their spelling: the parent typing a policy
and the merchant's catalogue. Comparing them any other way than through this function would let
"Alcohol " slip past a block on "alcohol", and Unicode lets the same word be written many ways:
fullwidth letters ("\uff41\uff4c\uff43ohol"), invisible format characters ("alc\u200bohol", a soft hyphen
"alcohol\u00ad"), ligatures and case forms that lower() does not fold ("ß" / "SS").
"""

from __future__ import annotations

import unicodedata

MAX_CATEGORY_LENGTH = 64
MAX_CATEGORIES = 200  # per list; bounds the work a single policy can ask of every decision


def normalize_text(text: str) -> str:
    """The form text is compared in: NFKC, format characters (Unicode category Cf: zero-width
    spaces and joiners, soft hyphens, bidi marks, BOM) removed, case-folded, runs of white space
    made one space, trimmed. NFKC again after folding, since folding can leave compatibility forms.
    """
    folded = unicodedata.normalize("NFKC", text)
    folded = "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")
    folded = unicodedata.normalize("NFKC", folded.casefold())
    return " ".join(folded.split())


def normalize_category(category: str) -> str:
    r"""`normalize_text` for categories: "  Gift-Cards" -> "gift-cards", "alc\u200bohol" -> "alcohol"."""
    return normalize_text(category)
