"""``If-Match`` (RFC 9110 §13.1.1) for things whose ETag is a version number (``"3"``).

One parser for every writer that takes ``If-Match`` (plans, cases): ``*`` matches any current
representation, a list (``"3", "4"``) matches when any of its tags does, and a weak tag
(``W/"3"``) never matches (If-Match compares strongly).
"""

from __future__ import annotations

from typing import Literal

#: ``If-Match: *``: any current representation.
ANY: Literal["*"] = "*"

IfMatch = frozenset[int] | Literal["*"] | None


def parse_if_match(value: str | None) -> IfMatch:
    """Return None if the header is absent, :data:`ANY` for ``*``, else the versions its
    strong entity tags name (weak or malformed tags name none, so they match nothing)."""
    if value is None:
        return None
    if value.strip() == "*":
        return ANY
    versions: set[int] = set()
    for part in value.split(","):
        tag = part.strip()
        if len(tag) < 3 or not (tag.startswith('"') and tag.endswith('"')):
            continue  # weak (W/"3") or not an entity tag
        inner = tag[1:-1]
        if inner.isdigit() and len(inner) < 10:
            versions.add(int(inner))
    return frozenset(versions)


def if_match_holds(condition: IfMatch, version: int) -> bool:
    """True when ``condition`` (from :func:`parse_if_match`) lets a write at ``version`` go
    ahead; an absent header (None) holds."""
    if condition is None or condition == ANY:
        return True
    return version in condition


def describe(condition: IfMatch) -> str:
    """How a refusal names what ``If-Match`` asked for."""
    if condition is None or condition == ANY:
        return "any version"
    if not condition:
        return 'no version (If-Match takes the ETag as sent, e.g. "3"; weak tags never match)'
    return ", ".join(str(v) for v in sorted(condition))
