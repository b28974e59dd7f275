"""Values are rendered as text, never as markup.

The helpers of ``t3vis.ui.text`` against a payload corpus, rendered as Panel renders them (its markdown-it parser),
and a scan of the views' source (``t3vis/ui/*.py``, ``apps/*.py``) that fails when a view builds markup from values
any other way: a markup pane made directly, ``Markdown``/``HTML`` made from anything but a literal, an f-string,
``%``, ``.format`` or ``+`` of plain strings handed to a pane, an HTML tooltip template or an 'html' formatter.
"""

from __future__ import annotations

import ast
import html
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from ui_fixtures import PAYLOADS

from t3vis.serving import Forward
from t3vis.ui.explorer import DemoOffer, invalid_run
from t3vis.ui.projection import legend_html
from t3vis.ui.text import HTML, AlertPane, HTMLPane, Markdown, MarkdownPane, code, escape_markdown
from t3vis.ui.tokens import classes_html, pruning_summary
from t3vis.ui.widgets import ClickableHTML

ROOT = Path(__file__).resolve().parents[1]
VIEWS = sorted((ROOT / "t3vis" / "ui").glob("*.py")) + sorted((ROOT / "apps").glob("*.py"))
HELPER = ROOT / "t3vis" / "ui" / "text.py"
#: Everything the corpus is tried in: the test's payloads, plus line breaks and Markdown block starts.
CORPUS = PAYLOADS + ("a\n\n# b\n- c\n1. d", "    indented ", "\\", "x\\`y`", "a*", "_", "*", "![i](x.png)",
                     "$$x$$ :smile: www.example.com config.py")


class Parsed(HTMLParser):
    """Tags, attributes and text of an HTML fragment (what a browser would build from it)."""

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.text = [], [], []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join("".join(self.text).split())


def rendered(pane) -> Parsed:
    """The HTML of the model a pane sends to the browser (escaped for transport; the browser unescapes it)."""
    return Parsed(html.unescape(pane.get_root().text))


def words(value: str) -> str:
    return " ".join(str(value).split())


# ---------------------------------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("value", CORPUS)
@pytest.mark.parametrize("template, tags", [
    ("{}", ["p"]), ("**{}**: x", ["p", "strong"]), ("- a\n- **{}** · {}", ["ul", "li", "li", "strong"]),
    ("### {}", ["h3"]), ("[{}](#top)", ["p", "a"]),
])
def test_a_value_in_a_markdown_template_renders_as_exactly_its_text(template, tags, value):
    pane = MarkdownPane(Markdown(template).format(value, value))
    got = rendered(pane)
    assert got.tags == tags  # the template's tags, none from the value
    assert got.attrs == ([("href", "#top")] if "](#top)" in template else [])
    assert words(value) in got.visible
    assert got.visible.count(words(value)) == template.count("{}")


@pytest.mark.parametrize("value", CORPUS)
def test_plain_strings_in_the_panes_are_text(value):
    for pane in (MarkdownPane(value), AlertPane(value, alert_type="danger"), HTMLPane(value)):
        got = rendered(pane)
        assert got.tags in ([], ["p"]) and got.attrs == []
        assert got.visible == words(value)


@pytest.mark.parametrize("value", CORPUS)
def test_code_spans_cannot_be_closed_by_the_value(value):
    got = rendered(MarkdownPane(Markdown("run {} cannot be opened").format(code(value))))
    assert got.tags == ["p", "code"] and got.attrs == []
    assert got.visible == words(f"run {' '.join(value.splitlines())} cannot be opened")


@pytest.mark.parametrize("value", CORPUS)
def test_a_value_in_an_html_template_stays_in_its_attribute_and_text(value):
    got = Parsed(HTML('<span class="a" title="{}">{}</span>').format(value, value))
    assert got.tags == ["span"] and got.attrs == [("class", "a"), ("title", value)]
    assert "".join(got.text) == value


def test_numbers_go_in_as_formatted_and_markup_joins_escape_what_is_not_markup():
    assert Markdown("**{:,}** · {:.1%} · {:+.3f} · {}").format(4000, np.float32(0.5), -0.25, 7) == \
        "**4,000** · 50.0% · -0.250 · 7"
    joined = Markdown("\n").join([Markdown("- **{}**").format("a*b"), "<i>c</i>"])
    assert isinstance(joined, Markdown) and joined == "- **a\\*b**\n\\<i\\>c\\<\\/i\\>"
    assert Markdown("**x** ") + "_y_" == "**x** \\_y\\_" and "`z`" + Markdown(" **x**") == "\\`z\\` **x**"
    assert HTML("{}").format(Markdown("**x**")) == "**x**" and HTML("<b>{}</b>").format("<i>") == "<b>&lt;i&gt;</b>"
    assert Markdown("{}").format(HTML("<b>x</b>")) == escape_markdown("<b>x</b>")
    assert type(Markdown("a").replace("a", "b")) is str  # str methods lose the mark: the panes then show text


def test_view_builders_escape_label_names_and_clickable_html_shows_plain_strings_as_text():
    names = list(PAYLOADS[:3])
    boxes = Parsed(classes_html(names, np.array([0.2, 0.3, 0.5]), gold=0, target=2))
    assert {a for a, _ in boxes.attrs} <= {"class", "data-click", "title", "style"}
    assert all(name in boxes.text for name in names)
    legend = Parsed(legend_html(PAYLOADS[0], {PAYLOADS[1]: "#000", PAYLOADS[3]: "#fff"}))
    assert {a for a, _ in legend.attrs} == {"class", "style"} and set(legend.tags) == {"div", "b", "span"}
    assert PAYLOADS[0] in legend.text and PAYLOADS[1] in legend.text
    before, after = (Forward(np.log(p), np.array(p), None) for p in ([0.6, 0.3, 0.1], [0.1, 0.3, 0.6]))
    summary = rendered(MarkdownPane(pruning_summary(names, 0, [(0, 1)], before, after)))
    assert summary.tags == ["p", "strong", "strong"] and words(names[2]) in summary.visible
    clickable = ClickableHTML()
    assert clickable._process_param_change({"html": PAYLOADS[0]})["html"] == html.escape(PAYLOADS[0])
    assert clickable._process_param_change({"html": HTML("<b>x</b>")})["html"] == "<b>x</b>"


def test_the_demo_offer_and_run_errors_show_paths_and_names_as_text(tmp_path):
    runs_dir = tmp_path / PAYLOADS[2]
    offer = rendered(DemoOffer(runs_dir=runs_dir).text)
    assert set(offer.tags) == {"h3", "p", "code"} and offer.attrs == []
    assert f"The runs directory {runs_dir} holds no t3vis run" in offer.visible
    error = rendered(AlertPane(invalid_run(PAYLOADS[0], [PAYLOADS[4]] * 12), alert_type="danger"))
    assert set(error.tags) == {"p", "code", "ul", "li"} and error.attrs == []
    assert f"run {PAYLOADS[0]} cannot be opened" in error.visible
    assert error.visible.count(PAYLOADS[4]) == 10 and error.visible.endswith("and 2 more")


# ---------------------------------------------------------------------------------------------------- the scan
MARKUP_PANES = {"Markdown", "HTML", "Alert", "Str", "StaticText", "Typography", "LaTeX"}
LIBRARIES = {"pn", "panel", "pmui", "panel_material_ui"}
SAFE_TYPES = {"Markdown", "HTML"}
SAFE_PANES = {"MarkdownPane", "AlertPane", "HTMLPane", "ClickableHTML"}
SINK_ATTRIBUTES = {"object", "html"}
MARKUP_HINTS = ("<", "**", "](")


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    return ""


def _literal(node) -> bool:
    """A string written in the code (or a choice between such strings)."""
    if isinstance(node, ast.IfExp):
        return _literal(node.body) and _literal(node.orelse)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _plain_formatting(node) -> bool:
    """A plain ``str`` built from values: an f-string with fields, ``%``, ``"...".format/join`` or ``+``."""
    if isinstance(node, ast.IfExp):
        return _plain_formatting(node.body) or _plain_formatting(node.orelse)
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return any(_literal(side) or isinstance(side, ast.JoinedStr) for side in (node.left, node.right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
        return _literal(node.func.value)
    return False


def _looks_like_markup(node) -> bool:
    """Plain formatting whose written parts hold tags, emphasis, links or code spans."""
    if isinstance(node, ast.JoinedStr):
        parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and _literal(node.left):
        parts = [node.left.value]
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
            and _literal(node.func.value):
        parts = [node.func.value.value]
    else:
        return False
    return _plain_formatting(node) and any(hint in part for part in parts for hint in MARKUP_HINTS)


def markup_violations(source: str, where: str = "<source>") -> list[str]:
    """Every place in ``source`` that builds page markup from values without ``t3vis.ui.text``."""
    found = []

    def flag(node, why):
        found.append(f"{where}:{node.lineno}: {why}: {ast.unparse(node)[:100]}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in MARKUP_PANES and _dotted(node).split(".")[0] in LIBRARIES:
            flag(node, "a markup pane made directly (use t3vis.ui.text's panes)")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES \
                and any(alias.name in MARKUP_PANES for alias in node.names):
            flag(node, "a markup pane imported directly (use t3vis.ui.text's panes)")
        if isinstance(node, ast.Call):
            name = _dotted(node.func).split(".")[-1]
            if _dotted(node.func).removeprefix("text.") in SAFE_TYPES \
                    and (node.keywords or not all(_literal(a) for a in node.args)):
                flag(node, f"{name}(...) of something other than a literal template")
            if name in SAFE_PANES:
                for value in node.args[:1] + [k.value for k in node.keywords if k.arg in ("object", "html")]:
                    if _plain_formatting(value):
                        flag(node, "a plain string built from values handed to a pane (use Markdown/HTML(...).format)")
            if _dotted(node.func) in ("pn.panel", "panel.panel"):
                flag(node, "pn.panel picks a Markdown pane for a string")
            library_call = _dotted(node.func).split(".")[0] in LIBRARIES
            for keyword in node.keywords:
                if keyword.arg in ("hover_tooltips", "tooltips") \
                        and not isinstance(keyword.value, (ast.List, ast.Name)):
                    flag(node, "a tooltip template (Bokeh renders it as HTML): use a list of (label, '@field')")
                if keyword.arg in ("formatters", "title_formatters") and any(
                        (_literal(n) and n.value == "html") or _dotted(n).endswith("HTMLTemplateFormatter")
                        for n in ast.walk(keyword.value)):
                    flag(node, "an HTML formatter for table cells")
                if library_call and keyword.arg in ("title", "name", "header") and _plain_formatting(keyword.value):
                    flag(node, f"{keyword.arg}= built from values (Material UI renders titles as HTML)")
            if library_call and any(_plain_formatting(a) or (isinstance(a, ast.Tuple) and a.elts
                                                            and _plain_formatting(a.elts[0])) for a in node.args):
                flag(node, "a string built from values as a layout child or tab title (rendered as Markdown/HTML)")
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr in SINK_ATTRIBUTES for t in targets) \
                    and (_plain_formatting(node.value) or isinstance(node, ast.AugAssign)):
                flag(node, "a plain string built from values assigned as a pane's markup")
        if isinstance(node, (ast.JoinedStr, ast.BinOp, ast.Call)) and _looks_like_markup(node):
            flag(node, "markup formatted from values with a plain string (use Markdown/HTML(...).format)")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "{safe}" in node.value:
            flag(node, "Bokeh's {safe} tooltip format shows a value as HTML")
        if isinstance(node, ast.Dict) and any(_literal(k) and k.value == "tooltip" for k in node.keys if k):
            flag(node, "a Tabulator cell tooltip (it shows the cell's value as HTML)")
    return found


def test_views_build_markup_only_through_the_text_helpers():
    assert HELPER.is_file() and len(VIEWS) > 10
    problems = [p for path in VIEWS if path != HELPER
                for p in markup_violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert not problems, "\n".join(problems)


BYPASSES = {
    "pane": "import panel as pn\nx = pn.pane.Markdown(name)",
    "alert import": "from panel.pane import Alert",
    "pmui typography": "import panel_material_ui as pmui\nx = pmui.Typography(name)",
    "f-string object": "self.header.object = f'**{name}**'",
    "plain concat object": "self.header.object = '**' + name",
    "augmented object": "self.header.object += name",
    "percent html": "self.grid.html = '<b>%s</b>' % name",
    "format to pane": "x = MarkdownPane('**{}**'.format(name))",
    "conditional": "self.header.object = f'{name}' if name else ''",
    "safe of f-string": "x = Markdown(f'**{name}**')",
    "safe of variable": "x = HTML(name)",
    "builder": "def legend(title):\n    return f'<b>{title}</b>'",
    "markdown builder": "lines.append(f'- **{label}**: {value}')",
    "card title": "import panel_material_ui as pmui\nc = pmui.Card(x, title=f'{name}')",
    "tab title": "import panel_material_ui as pmui\nt = pmui.Tabs((f'{name}', x))",
    "layout child": "import panel as pn\nc = pn.Column(f'{name}')",
    "pn.panel": "import panel as pn\nc = pn.panel(name)",
    "tooltip template": "p.opts(hover_tooltips='<b>@text</b>')",
    "safe tooltip": "p.opts(hover_tooltips=[('text', '@text{safe}')])",
    "html formatter": "t = Tabulator(df, formatters={'text': 'html'})",
    "cell tooltip": "t = Tabulator(df, configuration={'columnDefaults': {'tooltip': True}})",
}


@pytest.mark.parametrize("case", sorted(BYPASSES))
def test_the_scan_catches_each_way_around_the_helpers(case):
    assert markup_violations(textwrap.dedent(BYPASSES[case])), case


def test_the_scan_accepts_the_helpers():
    fine = """
        import panel as pn
        x = MarkdownPane(Markdown("**{}** · {:,}").format(name, n), sizing_mode="stretch_width")
        x.object = Markdown("a") if flag else "plain text, shown as text"
        x.object = Markdown("\\n").join(lines)
        self.grid.html = HTML('<b title="{}">{}</b>').format(name, name)
        error = StoreError(f"run {name!r} is missing `store.zarr`")
        p.opts(hover_tooltips=[("text", "@text")])
        c = pn.Column(x, pn.Row(y), title="Projection")
    """
    assert markup_violations(textwrap.dedent(fine)) == []
