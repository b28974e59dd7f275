"""What every view shares: the app's CSS, the `ClickableHTML` component, and shared pane styles.

One home for them, so the head view and the instance view (and any new view) draw from the same stylesheet and
click component instead of importing them from each other. ``ClickableHTML`` is a tiny JS component that sends
the ``data-click`` key of the clicked element to Python.
"""

from __future__ import annotations

from typing import Callable

import param
from panel.custom import JSComponent

from .text import HTML

#: A warning box drawn on a Markdown pane, in the Material palette's warning colours (``text.AlertPane`` is the
#: alert with Panel's own box; it sets its own readable ink, ``text.ALERT_INK``).
NOTICE_STYLE = {"background": "#fff4e5", "color": "#5f2b00", "border-left": "4px solid #ed6c02",
                "padding": "0 10px", "border-radius": "4px"}

CSS = """
:host { display: block; width: 100%; }
.t3-clickable { font-family: var(--bokeh-font-family, sans-serif); font-size: 13px; }
.tokens { line-height: 1.9; max-height: 26em; overflow-y: auto; padding: 4px 6px; border: 1px solid #ddd;
          border-radius: 4px; background: #fff; }
.tok { padding: 1px 2px; border-radius: 3px; cursor: pointer; }
.tok.special { font-size: 10px; color: #666; }
.tok.focus { outline: 2px solid #222; outline-offset: 1px; }
.tok:hover { outline: 1px solid #888; }
.classes { display: flex; flex-wrap: wrap; gap: 6px; }
.cls { position: relative; min-width: 9em; padding: 4px 8px; border: 1px solid #ccc; border-radius: 4px;
       cursor: pointer; overflow: hidden; background: #fafafa; }
.cls .bar { position: absolute; left: 0; top: 0; bottom: 0; background: rgba(117, 63, 171, 0.18); }
.cls .name, .cls .p { position: relative; }
.cls .p { float: right; margin-left: 8px; font-variant-numeric: tabular-nums; }
.cls .delta { position: relative; display: block; font-size: 11px; color: #555; }
.cls.target { border: 2px solid #222; }
.cls.more { min-width: 0; color: #555; border-style: dashed; }
.cls.gold .name::after { content: " \\2605"; color: #b8860b; }
.tagstrip { display: flex; flex-wrap: wrap; gap: 4px 6px; padding: 4px 6px; border: 1px solid #ddd;
            border-radius: 4px; background: #fff; max-height: 12em; overflow-y: auto; }
.tagw { display: inline-flex; flex-direction: column; align-items: center; padding: 1px 4px; border-radius: 3px;
        cursor: pointer; line-height: 1.3; }
.tagw:hover { outline: 1px solid #888; }
.tagw.focus { outline: 2px solid #222; background: #f3f3f3; }
.tagw .t { display: flex; gap: 2px; }
.tagw .gold, .tagw .pred { font-size: 10px; color: #555; }
.tagw .pred::before { content: "\\2192 "; color: #999; }
.tagw:not(.wrong):not(.unread) .pred { display: none; }
.tagw.wrong .pred { color: #d62728; font-weight: bold; }
.tagw.wrong .w { text-decoration: underline wavy #d62728; }
.hgrid { display: grid; gap: 2px; align-items: stretch; }
.hgrid .lab { font-size: 11px; color: #555; text-align: center; align-self: center; }
.cell { position: relative; border: 1px solid #ddd; border-radius: 3px; cursor: pointer; min-height: 30px;
        display: flex; align-items: center; justify-content: center; font-size: 10px;
        font-variant-numeric: tabular-nums; }
.cell img { width: 100%; height: 100%; image-rendering: pixelated; display: block; }
.cell.selected { outline: 3px solid #222; z-index: 1; }
.cell.pruned { opacity: 0.35; background-image: repeating-linear-gradient(45deg, transparent 0 4px, #999 4px 5px); }
.cell .x { position: absolute; top: 0; right: 0; border: none; background: rgba(255,255,255,0.85); cursor: pointer;
           font-size: 11px; line-height: 1; padding: 1px 3px; border-radius: 0 3px 0 3px; opacity: 0; }
.cell:hover .x, .cell .x:focus { opacity: 1; }
.cell.pruned .x { opacity: 1; background: #ffd; }
"""


class ClickableHTML(JSComponent):
    """HTML whose elements carrying ``data-click="key"`` report clicks to Python: ``on_click(key)``.

    One component (not a widget per token or cell) keeps a 512-token text or a 12x12 grid one DOM update.
    ``html`` is markup only when it is an ``HTML`` object (a literal template); any other string shows as text.
    """

    html = param.String(default="")

    _esm = """
    export function render({ model }) {
      const root = document.createElement("div");
      root.className = "t3-clickable";
      root.innerHTML = model.html;
      root.addEventListener("click", (event) => {
        const target = event.target.closest("[data-click]");
        if (target && root.contains(target)) {
          event.stopPropagation();
          model.send_msg(target.dataset.click);
        }
      });
      model.on("html", () => { root.innerHTML = model.html; });
      return root;
    }
    """

    def __init__(self, on_click: Callable[[str], None] | None = None, **params):
        params.setdefault("stylesheets", [CSS])
        params.setdefault("sizing_mode", "stretch_width")
        super().__init__(**params)
        self._click_callbacks = [on_click] if on_click else []

    def on_click(self, callback: Callable[[str], None]) -> None:
        self._click_callbacks.append(callback)

    def _handle_msg(self, data) -> None:
        for callback in self._click_callbacks:
            callback(str(data))

    def _process_param_change(self, params):
        if "html" in params:
            params = {**params, "html": str(HTML.escape(params["html"]))}
        return super()._process_param_change(params)


class MenuClickThrough(JSComponent):
    """Lets the first click beside an open Material UI menu reach what it lands on, and closes the menu.

    A menu covers the page with an invisible backdrop that takes the next click only to close itself. A
    multi-select keeps its menu open after each choice, so the click meant for the next sidebar widget was lost.
    Once the pointer crosses that backdrop it lets clicks through (the menu itself still takes them), and a
    press outside the menu closes it first, as a click on the backdrop does (focus then goes where the press was).
    One document listener per window, whatever the number of explorers; renders nothing.
    """

    _esm = """
    export function render() {
      if (!window.__t3visMenuClickThrough) {
        window.__t3visMenuClickThrough = true;
        let modal = null;  // the open menu whose backdrop the pointer crossed
        document.addEventListener("pointermove", (event) => {
          const target = event.composedPath()[0];
          if (target instanceof Element && target.classList.contains("MuiBackdrop-invisible")) {
            modal = target.parentElement;
            modal.style.pointerEvents = "none";
            for (const paper of modal.querySelectorAll(".MuiPaper-root")) paper.style.pointerEvents = "auto";
          }
        }, true);
        document.addEventListener("pointerdown", (event) => {
          if (modal === null || !modal.isConnected) {
            modal = null;
            return;
          }
          const path = event.composedPath();
          if (![...modal.querySelectorAll(".MuiPaper-root")].some((paper) => path.includes(paper))) {
            modal.querySelector(".MuiBackdrop-root")?.click();
            modal = null;
          }
        }, true);
      }
      return document.createElement("span");
    }
    """

    def __init__(self, **params):
        params.setdefault("width", 0)
        params.setdefault("height", 0)
        params.setdefault("margin", 0)
        super().__init__(**params)
