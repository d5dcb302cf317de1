"""folium elements of the map pages: GeoJSON layers, clustered markers, HTML controls.

Why not ``folium.GeoJson``: it serialises data with spaces and per-feature style switch
tables, and its popups need jQuery. These elements embed compact JSON once and hand it to
the small runtime in ``maps/static/wangge/wangge.js`` (``wg.areas``, ``wg.points``), which
styles, labels and links features in the browser. They are still folium layers: the layer
control lists them and toggles them like any other.
"""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

from branca.element import Element, MacroElement
from folium.map import Layer
from folium.template import Template

__all__ = [
    "js",
    "html_text",
    "RawHtml",
    "AreaLayer",
    "PointLayer",
    "ClusteredPoints",
    "HtmlControl",
    "GapThemes",
    "PageScript",
]

_UNSAFE_LT = re.compile(r"<(?=[/!sS])")
_JINJA_OPEN = re.compile(r"\{(?=[{%#])")


def js(value: Any) -> str:
    """Return ``value`` as compact JSON that is safe inside a ``<script>`` element.

    Also safe from Jinja: branca renders every element's output once more as a template, so
    a name such as ``{{ 7*7 }}`` (incidents come from the public) would be evaluated. In JSON
    a ``{`` followed by ``{``, ``%`` or ``#`` can only be inside a string, where ``\\u007b``
    means the same.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # Only "</", "<!" and "<script" can end or derail a <script> element; escaping just
    # those keeps prepared HTML (legends) readable and small.
    text = _UNSAFE_LT.sub(r"\\u003c", text)
    text = _JINJA_OPEN.sub(r"\\u007b", text)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def html_text(value: Any) -> str:
    """Return ``value`` escaped for HTML text and attributes, braces included (see :func:`js`)."""
    return escape(str(value)).replace("{", "&#123;").replace("}", "&#125;")


class RawHtml(Element):
    """HTML put into the page as it is (branca would otherwise parse it as a template)."""

    def __init__(self, html: str):
        super().__init__("")
        self.raw = html

    def render(self, **kwargs) -> str:
        return self.raw


class AreaLayer(Layer):
    """A polygon layer: outline or choropleth, with tooltips and popups (``wg.areas``).

    Parameters
    ----------
    data : dict
        A FeatureCollection of polygons.
    name : str
        Its name in the layer control.
    options : dict
        ``style``, ``choropleth`` (``property``, ``breaks``, ``colors``, ``missing``),
        ``tooltip`` and ``popup`` (``title``, ``fields``, ``links``), as ``wg.areas`` reads.
    show, control : bool
        Shown at first; listed in the layer control.
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = wg.areas({{ this.data_js }}, {{ this.options_js }});
        {% endmacro %}
        """
    )

    def __init__(
        self,
        data: dict,
        *,
        name: str,
        options: dict,
        show: bool = True,
        control: bool = True,
    ):
        super().__init__(name=name, overlay=True, control=control, show=show)
        self._name = "AreaLayer"
        self.count = len(data["features"])
        self.data_js = js(data)
        self.options_js = js(options)


class PointLayer(Layer):
    """A layer of div-icon markers (``wg.points``), unclustered: a grid's few units."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = wg.points({{ this.data_js }}, {{ this.options_js }});
        {% endmacro %}
        """
    )

    def __init__(
        self, data: dict, *, name: str, options: dict, show: bool = True, control: bool = True
    ):
        super().__init__(name=name, overlay=True, control=control, show=show)
        self._name = "PointLayer"
        self.count = len(data["features"])
        self.data_js = js(data)
        self.options_js = js(options)


class ClusteredPoints(MacroElement):
    """Markers added in one call to the ``MarkerCluster`` this element is a child of."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        {{ this._parent.get_name() }}.addLayers(
            wg.points({{ this.data_js }}, {{ this.options_js }}).getLayers());
        {% endmacro %}
        """
    )

    def __init__(self, data: dict, *, options: dict):
        super().__init__()
        self._name = "ClusteredPoints"
        self.count = len(data["features"])
        self.data_js = js(data)
        self.options_js = js(options)


class HtmlControl(MacroElement):
    """A map control showing prepared HTML (a legend, a title): the caller escapes it."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        wg.control({{ this._parent.get_name() }}, {{ this.html_js }}, {{ this.position_js }},
                   {{ this.cls_js }});
        {% endmacro %}
        """
    )

    def __init__(self, html: str, *, position: str = "bottomright", cls: str = ""):
        super().__init__()
        self._name = "HtmlControl"
        self.html = html
        self.html_js = js(html)
        self.position_js = js(position)
        self.cls_js = js(cls)


class GapThemes(MacroElement):
    """Layers shown one at a time, chosen in a control of their own (``wg.themes``): the
    planning page's coverage gaps. The first theme is shown when the page opens; "none"
    hides them all. The layers are this element's children (made, not added to the map)."""

    def __init__(self, *, title: str, none: str, position: str = "topright"):
        super().__init__()
        self._name = "GapThemes"
        self.title = title
        self.none = none
        self.position = position
        self.themes: list[tuple[str, Layer]] = []

    def add_theme(self, name: str, layer: Layer) -> int:
        """Register ``layer`` (add it as a child too) under ``name``; return its index."""
        self.themes.append((name, layer))
        return len(self.themes) - 1

    def render(self, **kwargs):
        # The layers' scripts first: the chooser's script refers to their variables.
        for child in self._children.values():
            child.render(**kwargs)
        if not self.themes:
            return
        themes = ",".join(f"[{js(name)},{layer.get_name()}]" for name, layer in self.themes)
        options = js({"title": self.title, "none": self.none, "position": self.position})
        script = f"wg.themes({self._parent.get_name()}, [{themes}], {options});"
        self.get_root().script.add_child(RawHtml(script), name=self.get_name())


class PageScript(MacroElement):
    """Page-level additions: CSS in the head (``css``), HTML after the map (``html``) and a
    script run once the map exists (``script``).

    In ``css`` and ``script``, ``{map}`` stands for the map's id and JavaScript variable.
    """

    _template = Template(
        """
        {% macro header(this, kwargs) %}
        {%- if this.css %}<style>{{ this.css.replace("{map}", this._parent.get_name()) }}</style>
        {%- endif %}
        {% endmacro %}
        {% macro html(this, kwargs) %}{{ this.html }}{% endmacro %}
        {% macro script(this, kwargs) %}
        {{ this.script.replace("{map}", this._parent.get_name()) }}
        {% endmacro %}
        """
    )

    def __init__(self, html: str = "", script: str = "", css: str = ""):
        # The three are rendered again as Jinja templates (see js()): data belongs in them
        # only through js() and html_text(), which leave no "{{", "{%" or "{#".
        for part in (html, script, css):
            if _JINJA_OPEN.search(part):
                raise ValueError("page HTML, CSS and scripts must not contain '{{', '{%' or '{#'")
        super().__init__()
        self._name = "PageScript"
        self.html = html
        self.script = script
        self.css = css
