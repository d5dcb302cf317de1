"""Return the pages' words in the reader's language: message catalogs, names, dates.

The pages speak Simplified Chinese by default (the dispatchers and grid officers of Guiyang
work in it) and English on request (``?lang=en`` or ``Accept-Language``). Every word a person
reads comes from here:

* **messages** — written in English in the code, marked for the catalog with :func:`N_` (a
  dict of texts, a constant) or looked up at once with a :class:`Translator` (``t("…")``,
  ``t.ngettext(one, many, n)``); their Chinese is in the gettext catalog
  ``maps/locale/zh_CN/LC_MESSAGES/wangge.po``, read with Babel when first needed (no compiled
  ``.mo`` to build: a fresh clone runs as it is);
* **names** of incident categories, team roles, account roles and area levels — one table,
  :data:`NAMES`, with the Chinese and the English name of each;
* **dates** — :meth:`Translator.datetime` (Babel, in :data:`TIME_ZONE`); the scripts format
  theirs with the page's ``locale`` and ``timeZone`` (``Intl``).

Adding a string: mark it (``N_("…")`` or ``t("…")``), run ``python -m maps.i18n`` (the
catalog gains its msgid, marked fuzzy), write its Chinese in the ``.po`` and remove the fuzzy
flag. ``tests/maps/test_i18n.py`` fails while a marked string has no Chinese.

>>> t = translator("zh-CN")
>>> t("Open incidents"), translator("en")("Open incidents")
('未办结事件', 'Open incidents')
>>> t.name("category", "street_light"), translator("en").name("role", "grid_officer")
('路灯', 'grid officer')
"""

from __future__ import annotations

import functools
import gettext
import io
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from babel import Locale
from babel.dates import format_datetime
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

__all__ = [
    "LANGUAGES",
    "DEFAULT_LANGUAGE",
    "TIME_ZONE",
    "NAMES",
    "N_",
    "Translator",
    "translator",
    "negotiate_language",
    "catalog_path",
]

#: The languages the pages speak, the default first (BCP 47 tags, as in ``<html lang>``).
LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = LANGUAGES[0]
#: Dates are shown in the city's time (Guiyang keeps China Standard Time).
TIME_ZONE = "Asia/Shanghai"
DOMAIN = "wangge"
LOCALE_DIR = Path(__file__).parent / "locale"
#: BCP 47 tag → the catalog's directory (None: the messages are the English source).
_CATALOG_DIR = {"zh-CN": "zh_CN", "en": None}
#: BCP 47 tag → Babel's locale (dates, numbers).
_BABEL_LOCALE = {"zh-CN": "zh_Hans_CN", "en": "en_GB"}


def N_(message: str) -> str:
    """Return ``message`` unchanged: marks it for the catalog, translated where it is shown."""
    return message


#: The names of the domain's things by kind and key, one per language of :data:`LANGUAGES`
#: (Chinese, English): the one table the pages, their scripts and the report take category,
#: role and level names from.
NAMES: dict[str, dict[str, tuple[str, str]]] = {
    # As in the API; the legends follow this order. The residents' own list of complaints.
    "category": {
        "water": ("供水", "Water"),
        "gas": ("燃气", "Gas"),
        "street_light": ("路灯", "Street light"),
        "road": ("道路", "Road"),
        "sanitation": ("环境卫生", "Sanitation"),
        "public_order": ("治安秩序", "Public order"),
        "other": ("其他", "Other"),
    },
    # One character on each category's marker, so categories differ without relying on
    # colour alone.
    "category_glyph": {
        "water": ("水", "W"),
        "gas": ("气", "G"),
        "street_light": ("灯", "L"),
        "road": ("路", "R"),
        "sanitation": ("卫", "S"),
        "public_order": ("安", "P"),
        "other": ("他", "O"),
    },
    # The 1+1+1 team of a grid.
    "team_role": {
        "party_building_instructor": ("党建指导员", "Party-building instructor"),
        "grid_manager": ("网格管理员", "Grid manager"),
        "grid_police": ("网格民警", "Grid police officer"),
    },
    # Who acts on a case (account roles, and the deadline sweep).
    "role": {
        "admin": ("系统管理员", "administrator"),
        "planner": ("规划人员", "planner"),
        "city_dispatcher": ("市指挥中心调度员", "city dispatcher"),
        "district_dispatcher": ("区县指挥中心调度员", "district dispatcher"),
        "community_dispatcher": ("社区调度员", "community dispatcher"),
        "grid_officer": ("网格员", "grid officer"),
        "intake": ("受理平台", "intake"),
        "system": ("系统", "the system"),
    },
    # Area levels, top down.
    "level": {
        "city": ("市", "City"),
        "district": ("区县", "District"),
        "community": ("社区", "Community"),
        "grid": ("网格", "Grid"),
    },
    # An incident's coarse status (layers, Open311).
    "status": {
        "new": ("待受理", "new"),
        "open": ("办理中", "open"),
        "closed": ("已办结", "closed"),
    },
    # Stationed units (驻区单位) and their party organisation.
    "unit_kind": {
        "government_agency": ("机关", "government agency"),
        "enterprise": ("企业", "enterprise"),
        "public_institution": ("事业单位", "public institution"),
        "non_public_firm": ("非公企业", "non-public firm"),
        "social_organisation": ("社会组织", "social organisation"),
        "shop": ("商铺", "shop"),
    },
    "party_org": {
        "none": ("无", "none"),
        "group": ("党小组", "party group"),
        "branch": ("党支部", "party branch"),
        "general_branch": ("党总支", "general party branch"),
        "committee": ("党委", "party committee"),
    },
    # The "six must-visit" households.
    "care_kind": {
        "hardship": ("困难家庭", "hardship"),
        "dispute": ("矛盾纠纷", "unresolved dispute"),
        "laid_off": ("下岗失业党员", "laid-off member"),
        "serious_illness": ("重病", "serious illness"),
        "correction": ("刑满释放及社区矫正人员", "released or under community correction"),
        "elderly_alone": ("独居老人", "elderly living alone"),
    },
}


class Translator:
    """The words of one language: messages, names, dates.

    Parameters
    ----------
    lang : str
        One of :data:`LANGUAGES`.
    """

    def __init__(self, lang: str):
        if lang not in LANGUAGES:
            raise ValueError(f"lang is one of {', '.join(LANGUAGES)}, not {lang!r}")
        self.lang = lang
        self.locale = Locale.parse(_BABEL_LOCALE[lang])
        self._catalog = _translations(_CATALOG_DIR[lang])
        self._name = LANGUAGES.index(lang)  # NAMES hold one name per language, in order

    def __call__(self, message: str, **values) -> str:
        """Return ``message`` translated, with ``{name}`` filled from ``values`` if any."""
        text = self._catalog.gettext(message)
        return text.format(**values) if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values) -> str:
        """Return the form for ``n`` translated, ``{n}`` and ``values`` filled in."""
        return self._catalog.ngettext(singular, plural, n).format(n=n, **values)

    def texts(self, messages: Mapping[str, str]) -> dict[str, str]:
        """Return a dict of marked messages (``key → N_("…")``) translated, placeholders
        left for the script that fills them."""
        return {key: self(message) for key, message in messages.items()}

    def name(self, kind: str, key: str) -> str:
        """Return the name of ``key`` of ``kind`` (:data:`NAMES`); an unknown key as it is."""
        names = NAMES[kind].get(key)
        return key if names is None else names[self._name]

    def names(self, kind: str) -> dict[str, str]:
        """Return every name of ``kind``, in the table's order."""
        return {key: names[self._name] for key, names in NAMES[kind].items()}

    def join(self, items) -> str:
        """Return ``items`` as a list this language writes ("a, b and c", "a、b和c")."""
        return format_list([str(i) for i in items], locale=self.locale)

    def number(self, value: float, format: str | None = None) -> str:
        """Return a number with this language's separators."""
        return format_decimal(value, format=format, locale=self.locale)

    def datetime(self, value: datetime | str | None, format: str = "medium") -> str:
        """Return a moment as this language writes it, in :data:`TIME_ZONE` ("" for None;
        text that is not an ISO 8601 moment as it is)."""
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                return value
        return format_datetime(value, format, tzinfo=TIME_ZONE, locale=self.locale)

    def __repr__(self) -> str:
        return f"Translator({self.lang!r})"


@functools.cache
def translator(lang: str | None = None) -> Translator:
    """Return the translator of ``lang`` (default :data:`DEFAULT_LANGUAGE`), made once."""
    return Translator(lang or DEFAULT_LANGUAGE)


def catalog_path(directory: str = "zh_CN") -> Path:
    """Return the ``.po`` file of a catalog directory."""
    return LOCALE_DIR / directory / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def _translations(directory: str | None) -> gettext.NullTranslations:
    """Return the catalog of ``directory`` compiled in memory (fuzzy entries left out, so
    an unchecked translation shows the English rather than a guess)."""
    if directory is None:
        return gettext.NullTranslations()
    with catalog_path(directory).open("rb") as f:
        catalog = read_po(f, locale=directory, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def negotiate_language(*, query: str | None = None, accept_language: str | None = None) -> str:
    """Return the page language: ``query`` (``?lang=``) if it names one, else the best of
    ``Accept-Language`` (by q-value, then order), else :data:`DEFAULT_LANGUAGE`.

    A tag matches by its primary language (``zh-TW`` and ``zh`` read the Simplified pages,
    ``en-US`` the English ones); ``*`` and unknown languages give the default.

    Raises
    ------
    ValueError
        For a ``query`` that is no language the pages speak (the caller answers 422).

    Examples
    --------
    >>> negotiate_language(accept_language="en-US,en;q=0.9,zh;q=0.8")
    'en'
    >>> negotiate_language(query="zh-CN", accept_language="en")
    'zh-CN'
    """
    if query:
        found = _match(query)
        if found is None:
            raise ValueError(f"lang is one of {', '.join(LANGUAGES)}, not {query!r}")
        return found
    ranked = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if tag and q > 0:
            ranked.append((-q, i, tag))
    for _q, _i, tag in sorted(ranked):
        found = _match(tag)
        if found is not None:
            return found
    return DEFAULT_LANGUAGE


def _match(tag: str) -> str | None:
    primary = tag.strip().replace("_", "-").split("-")[0].lower()
    return next((lang for lang in LANGUAGES if lang.split("-")[0] == primary), None)


# -- keeping the catalog -------------------------------------------------------------------------
#: Where marked messages are: the page builders and their server-side data.
SOURCES = ("maps", "service/pages.py", "service/routers/pages.py")
#: Babel's keywords: N_() marks, a translator's call and its plural form.
KEYWORDS = {"N_": None, "t": None, "ngettext": (1, 2)}


def extract_messages(root: Path | None = None):
    """Return the messages marked in :data:`SOURCES` as a Babel catalog (a template)."""
    from babel.messages.catalog import Catalog
    from babel.messages.extract import extract_from_file

    root = root or Path(__file__).resolve().parent.parent
    template = Catalog(domain=DOMAIN, project="wangge", charset="utf-8")
    files: list[Path] = []
    for source in SOURCES:
        path = root / source
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for file in files:
        for lineno, message, comments, context in extract_from_file(
            "python", str(file), keywords=KEYWORDS, comment_tags=("i18n:",)
        ):
            rel = file.relative_to(root).as_posix()
            template.add(
                message, locations=[(rel, lineno)], auto_comments=comments, context=context
            )
    return template


def update_catalog(root: Path | None = None) -> list[str]:
    """Bring the Chinese catalog up to the marked messages; return the msgids that still
    lack a checked translation (new ones are added fuzzy and empty, unused ones dropped)."""
    from babel.messages.pofile import write_po

    template = extract_messages(root)
    path = catalog_path()
    with path.open("rb") as f:
        catalog = read_po(f, locale="zh_CN", domain=DOMAIN)
    catalog.update(template, no_fuzzy_matching=True)
    catalog.obsolete.clear()
    with path.open("wb") as f:
        write_po(
            f, catalog, width=100, sort_output=False, ignore_obsolete=True, include_lineno=False
        )
    _translations.cache_clear()
    translator.cache_clear()
    return [
        m.id if isinstance(m.id, str) else m.id[0]
        for m in catalog
        if m.id and (not m.string or m.fuzzy or (isinstance(m.string, tuple) and not all(m.string)))
    ]


if __name__ == "__main__":  # python -m maps.i18n
    missing = update_catalog()
    print(f"{catalog_path()}: {len(missing)} messages without Chinese")
    for message in missing:
        print(f"  {message}")
