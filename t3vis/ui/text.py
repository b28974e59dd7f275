"""Values are text, never markup: the one place where strings for the page are escaped.

A value (a run, label or column name, an example's text, a path, a URL argument, an error message) reaches the
page only as text. Markup is written in the code, as literal templates of two ``str`` types:

    Markdown("gold **{}** ({:.1%})").format(name, p)    # name escaped, the number as is
    HTML('<span title="{}">{}</span>').format(tip, word)

``format``, ``+`` and ``join`` escape every value that is not already ``Markdown`` (or ``HTML``), so a value can
never open a tag, close a code span or form a link; numbers go in as they are formatted. The panes below
(`MarkdownPane`, `AlertPane`, `HTMLPane`) show any plain ``str`` as text, so a view that forgets all this still
renders text. ``tests/test_render_safety.py`` scans the views for markup built any other way.

Panel's ``pn.pane.Str`` is no refuge: it wraps its text in ``<pre>`` unescaped.
"""

from __future__ import annotations

import functools
import html
import numbers
import re
import string

import panel as pn

_PUNCTUATION = frozenset(string.punctuation)
_HTML_SPECIAL = re.compile(r"[&<>\"']")


def escape_markdown(value) -> str:
    """``value`` as Markdown source that renders as exactly its text.

    Every ASCII punctuation character is backslash-escaped (CommonMark renders ``\\x`` as a literal ``x`` for
    all of them), so no emphasis, code span, link, autolink, inline HTML, entity, heading or list can form; line
    breaks become spaces, so a value cannot start a block either, and the ends are stripped, so ``**{}**`` stays
    bold (the page collapses white space anyway).
    """
    text = " ".join(str(value).splitlines()).strip()
    return "".join("\\" + c if c in _PUNCTUATION else c for c in text)


def escape_html(value) -> str:
    """``value`` as HTML text or attribute value (quotes included)."""
    text = str(value)
    return html.escape(text, quote=True) if _HTML_SPECIAL.search(text) else text


class _Safe(str):
    """Markup written in the code; values put into it are escaped with ``_escape``."""

    __slots__ = ()

    @classmethod
    def _escape(cls, value) -> str:
        raise NotImplementedError

    @classmethod
    def escape(cls, value) -> "_Safe":
        """``value`` as this markup: itself if it already is, else escaped."""
        return value if isinstance(value, cls) else cls(cls._escape(value))

    def format(self, *args, **kwargs) -> "_Safe":
        """Fill the template's fields (``{}``, ``{0}``, ``{name}``, each with an optional ``!conversion`` and
        ``:spec``, no nested fields): numbers and markup of this type go in as formatted, anything else escaped."""
        kind, out, auto = type(self), [], 0
        for literal, field, spec, conversion in _parse(self):
            out.append(literal)
            if field is None:
                continue
            if field == "":
                value, auto = args[auto], auto + 1
            else:
                value = args[int(field)] if field.isdigit() else kwargs[field]
            if conversion:
                value = {"r": repr, "s": str, "a": ascii}[conversion](value)
            formatted = format(value, spec)
            out.append(formatted if isinstance(value, (kind, numbers.Number)) else kind._escape(formatted))
        return kind("".join(out))

    def __add__(self, other) -> "_Safe":
        return type(self)(str.__add__(self, self.escape(other)))

    def __radd__(self, other) -> "_Safe":
        return type(self)(str.__add__(self.escape(other), self))

    def join(self, parts) -> "_Safe":
        return type(self)(str.join(self, (self.escape(p) for p in parts)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"


@functools.lru_cache(maxsize=1024)
def _parse(template: str) -> tuple:
    """A template's (literal, field, spec, conversion) parts (templates are literals: few, parsed once)."""
    return tuple(string.Formatter().parse(template))


class Markdown(_Safe):
    """Markdown written in the code (a literal template), with every value in it escaped by `escape_markdown`."""

    __slots__ = ()

    @classmethod
    def _escape(cls, value) -> str:
        return escape_markdown(value)


class HTML(_Safe):
    """HTML written in the code (a literal template), with every value in it escaped by `escape_html`."""

    __slots__ = ()

    @classmethod
    def _escape(cls, value) -> str:
        return escape_html(value)


def code(value) -> Markdown:
    """``value`` as an inline code span that shows exactly its text (a fence longer than any backtick run in it)."""
    text = " ".join(str(value).splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return Markdown(f"{fence} {text} {fence}")


#: A Tabulator formatter that renders cells as HTML: only for a column whose every value is ``HTML`` built here
#: (``marked``); a plain value in such a column would be markup.
HTML_CELLS = {"type": "html"}


def marked(text, spans, limit: int | None = None) -> HTML:
    """``text`` as HTML with each ``(start, end)`` span (sorted, disjoint: search hits) in ``<mark>``, all of it
    escaped; cut to ``limit`` characters (with "…"), hits clipped there."""
    text = str(text)
    if limit is not None and len(text) > limit:
        text, tail = text[: limit - 1], "…"
    else:
        tail = ""
    parts, at = [], 0
    for start, end in spans:
        start, end = max(start, at), min(end, len(text))
        if start >= end:
            continue
        parts.append(HTML("{}<mark>{}</mark>").format(text[at:start], text[start:end]))
        at = end
    return HTML("").join(parts) + text[at:] + tail


# ---------------------------------------------------------------------------------------------------- panes
class _MarkdownText:
    """Renders ``Markdown`` as Markdown and any other object as text."""

    def _transform_object(self, obj):
        return super()._transform_object(Markdown.escape("" if obj is None else obj))


class MarkdownPane(_MarkdownText, pn.pane.Markdown):
    """A Markdown pane for the views: ``Markdown`` objects are markup, any other ``str`` shows as text."""


#: Readable ink on each alert's pale background (Bootstrap's own pairs, contrast >= 7): the Material design gives
#: info and danger alerts its white "contrast text" there, which left their messages unreadable.
ALERT_INK = "\n".join(f":host(.alert-{kind}) {{ color: {ink}; }}" for kind, ink in (
    ("primary", "#052c65"), ("secondary", "#2b2f32"), ("success", "#0a3622"), ("danger", "#58151c"),
    ("warning", "#664d03"), ("info", "#055160"), ("light", "#495057"), ("dark", "#495057")))


class AlertPane(_MarkdownText, pn.pane.Alert):
    """An alert box: ``Markdown`` objects are markup, any other ``str`` (an error message) shows as text."""

    def __init__(self, object=None, **params):
        params["stylesheets"] = [ALERT_INK, *params.get("stylesheets", [])]
        super().__init__(object, **params)


class HTMLPane(pn.pane.HTML):
    """An HTML pane for the views: ``HTML`` objects are markup, any other ``str`` shows as text."""

    def _transform_object(self, obj):
        return super()._transform_object(HTML.escape("" if obj is None else obj))
