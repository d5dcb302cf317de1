"""What a reader of a page reads, and the catalog's English left in it (for the language tests).

:func:`visible_strings` collects a page's text: its text nodes, the attributes a browser
shows (title, aria-label, placeholder, alt), and every string literal of its inline scripts
(the layer names, legends, popups and word dicts the scripts put in the DOM), HTML inside
them and ``srcdoc`` pages parsed again. :func:`english_left` names the catalog's English
messages found among them. :func:`latin_words` is the browser tests' check on the rendered
DOM: words in Latin letters other than names the pages keep (GPS, Leaflet, …).
"""

from __future__ import annotations

import functools
import json
import re
from html.parser import HTMLParser

from babel.messages.pofile import read_po

from maps.i18n import catalog_path

SHOWN_ATTRIBUTES = {"title", "aria-label", "placeholder", "alt"}
#: A string literal, and the colon after it when it is an object's key.
_STRING = re.compile(r'("(?:[^"\\\n]|\\.)*")(\s*:)?')
#: Latin words a Chinese page may show: brand and unit names, and codes.
ALLOWED_LATIN = {"GPS", "Leaflet", "HTTP", "OpenStreetMap", "km", "m"}


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.scripts: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._in = tag
        for name, value in attrs:
            if value and name in SHOWN_ATTRIBUTES:
                self.found.append(value)
            if value and name == "srcdoc":
                self.found += visible_strings(value)

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts.append(data)
        elif self._in is None and data.strip():
            self.found.append(data)


@functools.cache
def _static_scripts() -> tuple[str, ...]:
    """Return how the scripts of ``maps/static`` begin when a static export inlines them."""
    from maps.assets import ASSETS

    return tuple(f"/* {a.path} */" for a in ASSETS if a.kind == "js")


def visible_strings(html: str) -> list[str]:
    """Return every string of ``html`` a reader may see (stripped, non-empty)."""
    parser = _Text()
    parser.feed(html)
    found = list(parser.found)
    for script in parser.scripts:
        if script.lstrip().startswith(_static_scripts()):
            continue  # a vendored library or the runtime, inlined in a static export
        literals = _STRING.findall(script)
        # A value that names a property elsewhere (a popup's ``["open", label]``) is code.
        keys = {literal for literal, key in literals if key}
        for literal, key in literals:
            if key or literal in keys:
                continue
            try:
                value = json.loads(literal)
            except ValueError:
                continue
            if "<" in value:
                found += visible_strings(value)
            found.append(value)
    return [s.strip() for s in found if s.strip()]


def _pattern(message: str) -> re.Pattern:
    parts = re.split(r"\{\w+\}", message)
    return re.compile("(?:.+)".join(re.escape(p) for p in parts), re.S)


def catalog_messages() -> list[tuple[str, str]]:
    """Return (English msgid, Chinese) of every catalog message (each plural form apart)."""
    with catalog_path().open("rb") as f:
        catalog = read_po(f)
    out = []
    for m in catalog:
        if not m.id:
            continue
        ids = [m.id] if isinstance(m.id, str) else list(m.id)
        strings = [m.string] if isinstance(m.string, str) else list(m.string)
        out += [(i, strings[0] if strings else "") for i in ids]
    return out


def english_left(html: str) -> list[str]:
    """Return the catalog's English messages a reader of ``html`` would see, each as
    ``message ← where``."""
    # A lone lower-case word in a script is a code ("community" as a level) far more often
    # than text; the browser tests read what is really shown.
    shown = [s for s in visible_strings(html) if not re.fullmatch(r"[a-z][a-z0-9_]*", s)]
    left = []
    for message, chinese in catalog_messages():
        if message == chinese or not re.search(r"[A-Za-z]{2}", message):
            continue
        pattern = _pattern(message)
        left += [f"{message!r} ← {s[:100]!r}" for s in shown if pattern.fullmatch(s)]
    return left


def latin_words(text: str, allowed: set[str] = ALLOWED_LATIN) -> list[str]:
    """Return the words in Latin letters of ``text`` other than ``allowed`` ones."""
    return [w for w in re.findall(r"[A-Za-z][A-Za-z'’-]*", text) if w not in allowed]
