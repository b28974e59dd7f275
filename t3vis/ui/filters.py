"""Filter controls: pick an attribute, then a range (continuous) or categories (categorical).

Widgets only edit ``state.filters``; the state turns them into the mask every view shows. A filter that keeps
everything (full range, all or no categories) is removed rather than stored.
"""

from __future__ import annotations

import panel as pn
import panel_material_ui as pmui
import param

from .data import CATEGORICAL
from .state import ExplorerState
from .text import Markdown, MarkdownPane
from .widgets import MenuClickThrough


class FilterPanel(pn.viewable.Viewer):
    """Attribute picker, the editor for the picked attribute, and a summary of active filters."""

    state = param.ClassSelector(class_=ExplorerState)

    def __init__(self, **params):
        super().__init__(**params)
        self.attribute = pmui.Select(label="Filter on", options={}, sizing_mode="stretch_width")
        self.editor = pn.Column(sizing_mode="stretch_width")
        self.summary = MarkdownPane("", sizing_mode="stretch_width", margin=(0, 10))
        self.clear = pmui.Button(label="Clear filters", variant="outlined", disabled=True,
                                 sizing_mode="stretch_width")
        self.clear.on_click(lambda e: self.state.clear_filters())
        self.attribute.param.watch(lambda e: self._edit(e.new), "value")
        self._on_run()

    def __panel__(self):
        # the category editor is a multi-select whose menu stays open after a choice: the next click beside it
        # must still reach the widget it lands on (the page's other menus profit too)
        return pn.Column(self.attribute, self.editor, self.summary, self.clear, MenuClickThrough(),
                         sizing_mode="stretch_width")

    @param.depends("state.run", watch=True)
    def _on_run(self) -> None:
        data = self.state.data
        options = {} if data is None else {a.label: a.name for a in data.attributes.values()}
        self.attribute.options = options
        first = next(iter(options.values()), None)
        if self.attribute.value == first:
            self._edit(first)
        else:
            self.attribute.value = first
        self._on_filters()

    @param.depends("state.filters", watch=True)
    def _on_filters(self) -> None:
        filters = self.state.filters
        data = self.state.data
        lines = []
        for name, value in filters.items():
            attr = data.attributes.get(name) if data is not None else None
            label = attr.label if attr is not None else name
            categorical = attr.kind == CATEGORICAL if attr is not None else \
                not all(isinstance(v, (int, float)) for v in value)
            if categorical:
                lines.append(Markdown("- **{}**: {}").format(label, ", ".join(map(str, value))))
            else:
                lines.append(Markdown("- **{}**: {:.4g} – {:.4g}").format(label, *value))
        self.summary.object = Markdown("\n").join(lines)
        self.clear.disabled = not filters
        self._sync_editor()

    def _sync_editor(self) -> None:
        """Show the state's filter in the open editor (after "Clear filters" or a change made elsewhere, a chip or
        a range the widget still showed would contradict the counts)."""
        name = self.attribute.value
        if not self.editor.objects or name is None:
            return
        widget, current = self.editor.objects[0], self.state.filters.get(name)
        if isinstance(widget, pmui.MultiChoice):
            want = list(current or [])
            if list(widget.value) != want:
                widget.value = want
        else:
            want = tuple(current) if current else (widget.start, widget.end)
            if tuple(widget.value) != want:
                widget.value = want

    def _edit(self, name: str | None) -> None:
        """Show the editor widget for ``name``, set to its current filter."""
        data = self.state.data
        if data is None or name is None:
            self.editor.objects = []
            return
        attr = data.attribute(name)
        current = self.state.filters.get(name)
        if attr.kind == CATEGORICAL:
            widget = pmui.MultiChoice(label=f"{attr.label} is one of", options=list(attr.categories),
                                      value=list(current or []), sizing_mode="stretch_width")

            def apply(event, name=name, n=len(attr.categories)):
                keep = list(event.new)
                self.state.set_filter(name, keep if 0 < len(keep) < n else None)
        else:
            lo, hi = data.value_range(name, self.state.checkpoint)
            if hi <= lo:
                hi = lo + 1.0
            step = (hi - lo) / 200
            widget = pmui.EditableRangeSlider(label=f"{attr.label} between", start=lo, end=hi, step=step,
                                              value=tuple(current) if current else (lo, hi),
                                              sizing_mode="stretch_width")

            def apply(event, name=name, lo=lo, hi=hi):
                a, b = event.new
                self.state.set_filter(name, None if a <= lo and b >= hi else (a, b))
        widget.param.watch(apply, "value_throttled" if "value_throttled" in widget.param else "value")
        self.editor.objects = [widget]
