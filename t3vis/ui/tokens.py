"""Token rendering for the instance view: the shown units (tokens or merged words), their values, colours and HTML;
a tagged sentence's strip of words with gold and predicted tags; what pruning changed.

Small pure functions, tested without a browser or a model: HTML is built from literal ``text.HTML`` templates
(token texts and label names go in escaped), one ``<span>`` per token or word, clicks reported through the
``data-click`` keys `widgets.ClickableHTML` sends back. A 512-token example is ~60 kB of HTML, built in ~2.5 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..serving import Encoding, Forward
from .text import HTML, Markdown

#: Colours: positive saliency, negative saliency, attention.
POSITIVE, NEGATIVE, ATTENTION = (214, 39, 40), (31, 119, 180), (117, 63, 171)


@dataclass(frozen=True)
class Unit:
    """What the view shows as one block: a token, or a word made of consecutive word-pieces ``[start, stop)``."""

    text: str
    start: int
    stop: int
    gap: str  # what separates it from the previous unit: "", " " or "\n"
    special: bool


def _gap(source: str) -> str:
    if not source:
        return ""
    return "\n" if "\n" in source else " "


def _piece_text(token: str) -> tuple[str, bool]:
    """A token's display text and whether it continues the previous word (for tokenizers without offsets)."""
    if token.startswith("##"):
        return token[2:] or token, True
    for mark in ("\u0120", "\u2581"):  # GPT-2 and SentencePiece word-start marks
        if token.startswith(mark):
            return token[1:] or token, False
    return token, False


def token_units(encoding: Encoding, merge_words: bool = True) -> list[Unit]:
    """The blocks to show: tokens, or words (consecutive word-pieces of one word merged) when ``merge_words``.

    Text comes from the character offsets into the original text, so case and accents survive lower-casing
    tokenizers; gaps between blocks keep the text's spaces and line breaks.
    """
    units: list[Unit] = []
    previous_end = None  # end offset of the last ordinary token
    for i, token in enumerate(encoding.tokens):
        last = units[-1] if units else None
        if encoding.special[i]:
            units.append(Unit(token, i, i + 1, " " if units else "", True))
            continue
        offset = encoding.offsets[i]
        if offset is None:
            text, continues = _piece_text(token)
            gap = "" if continues else " "
        else:
            text = encoding.text[offset[0]:offset[1]]
            gap = _gap(encoding.text[previous_end:offset[0]]) if previous_end is not None else ""
            previous_end = offset[1]
        if last is not None and last.special:
            gap = " "
        word = encoding.word_ids[i]
        if (merge_words and last is not None and not last.special and not gap and word is not None
                and encoding.word_ids[last.start] == word):
            if offset is not None:
                text = encoding.text[encoding.offsets[last.start][0]:offset[1]]
            else:
                text = last.text + text
            units[-1] = Unit(text, last.start, i + 1, last.gap, False)
        else:
            units.append(Unit(text, i, i + 1, gap if units else "", False))
    return units


def unit_sums(values: np.ndarray, units: list[Unit]) -> np.ndarray:
    """Per-unit sum of per-token values (saliency and attention received both add up over word-pieces)."""
    values = np.asarray(values, dtype=np.float64)
    return np.array([values[u.start:u.stop].sum() for u in units])


def attention_from(attention: np.ndarray, unit: Unit, units: list[Unit]) -> np.ndarray:
    """Where ``unit`` attends (``attention`` is one head's ``[T, T]``): its tokens' rows averaged, summed per unit.

    Rows of attention sum to 1, so the result does too: a distribution over the shown units.
    """
    row = np.asarray(attention[unit.start:unit.stop], dtype=np.float64).mean(0)
    return unit_sums(row, units)


def _mix(colour: tuple[int, int, int], t: float) -> str:
    t = float(min(1.0, max(0.0, t)))
    r, g, b = (round(255 + (c - 255) * t) for c in colour)
    return f"#{r:02x}{g:02x}{b:02x}"


def diverging_colours(values: np.ndarray) -> list[tuple[str, str]]:
    """(background, text colour) per value: red for positive, blue for negative, white at 0, scaled by max |v|."""
    values = np.asarray(values, dtype=np.float64)
    scale = float(np.abs(values).max()) if len(values) else 0.0
    scale = scale if scale > 0 else 1.0
    out = []
    for v in values / scale:
        background = _mix(POSITIVE if v >= 0 else NEGATIVE, abs(v))
        out.append((background, "#fff" if abs(v) > 0.6 else "#000"))
    return out


def sequential_colours(values: np.ndarray, colour=ATTENTION) -> list[tuple[str, str]]:
    """(background, text colour) per value in [0, max]: white to ``colour``."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0, None)
    scale = float(values.max()) if len(values) else 0.0
    scale = scale if scale > 0 else 1.0
    return [(_mix(colour, v), "#fff" if v > 0.6 else "#000") for v in values / scale]


def tokens_html(units: list[Unit], values: np.ndarray, colours: list[tuple[str, str]], *, focus: int | None = None,
                value_label: str = "saliency", example: int | None = None) -> HTML:
    """One clickable span per unit (``data-click="tok:<k>"``), coloured, its value in the tooltip.

    The block carries ``data-example`` and ``data-showing`` (saliency or attention) for tests and scripts.
    """
    parts = [HTML('<div class="tokens" data-showing="{}"{}>').format(
        value_label, HTML(' data-example="{}"').format(int(example)) if example is not None else HTML(""))]
    span = HTML('<span class="{}" data-click="tok:{}" title="{}: {} {:+.4g}" style="background:{};color:{}">{}</span>')
    for k, (unit, value, (background, ink)) in enumerate(zip(units, values, colours)):
        if unit.gap == "\n":
            parts.append(HTML("<br>"))
        elif unit.gap:
            parts.append(" ")
        classes = "tok" + (" special" if unit.special else "") + (" focus" if k == focus else "")
        parts.append(span.format(classes, k, unit.text, value_label, value, background, ink, unit.text))
    parts.append(HTML("</div>"))
    return HTML("").join(parts)


#: Classes the instance view shows at first when a model has more (a tagger's 21 tags pushed the saliency out of
#: sight): the most probable ones, plus the gold and the explained class; a "+N more" box shows the rest.
CLASSES_SHOWN = 6


def shown_classes(probs: np.ndarray, *, gold: int | None, target: int, limit: int | None = CLASSES_SHOWN) -> list[int]:
    """The classes to draw, in label order: all of them up to ``limit`` + 2, else the ``limit`` most probable with
    the gold and the explained (``target``) class."""
    n = len(probs)
    if limit is None or n <= limit + 2:
        return list(range(n))
    keep = set(np.argsort(-np.asarray(probs, np.float64), kind="stable")[:limit].tolist())
    keep |= {c for c in (gold, target) if c is not None and 0 <= c < n}
    return sorted(keep)


def classes_html(label_names, probs: np.ndarray, *, gold: int | None, target: int,
                 baseline: np.ndarray | None = None, limit: int | None = CLASSES_SHOWN) -> HTML:
    """One clickable box per class (``data-click="cls:<c>"``): probability bar, gold star, change from unpruned.
    Beyond ``limit`` (``shown_classes``), a "+N more" box (``cls:all``) stands for the rest; ``limit`` None shows
    every class, with a "fewer" box (``cls:few``) when there are that many."""
    box = HTML('<div class="{}" data-click="cls:{}" title="Show saliency for {}"><span class="bar" '
               'style="width:{:.1f}%"></span><span class="name">{}</span><span class="p">{:.1%}</span>{}</div>')
    shown = shown_classes(probs, gold=gold, target=target, limit=limit)
    parts = [HTML('<div class="classes">')]
    for c in shown:
        name = label_names[c]
        p = float(probs[c])
        classes = "cls" + (" target" if c == target else "") + (" gold" if c == gold else "")
        delta = HTML("")
        if baseline is not None:
            delta = HTML('<span class="delta">unpruned {:.1%} ({:+.1%})</span>').format(
                float(baseline[c]), p - float(baseline[c]))
        parts.append(box.format(classes, c, name, p * 100, name, p, delta))
    hidden = len(probs) - len(shown)
    if hidden:
        rest = float(np.delete(np.asarray(probs, np.float64), shown).sum())
        parts.append(HTML('<div class="cls more" data-click="cls:all" title="Show all {} classes">+{} more '
                          '<span class="p">{:.1%}</span></div>').format(len(probs), hidden, rest))
    elif limit is None and len(probs) > CLASSES_SHOWN + 2:
        parts.append(HTML('<div class="cls more" data-click="cls:few" title="Show the most probable only">fewer'
                          '</div>'))
    parts.append(HTML("</div>"))
    return HTML("").join(parts)


def pruning_summary(label_names, label: int | None, pruned, before: Forward, after: Forward) -> Markdown:
    """Markdown: what the pruned heads do to this example's prediction and loss."""
    names = list(label_names)
    p0, p1 = int(before.probs.argmax()), int(after.probs.argmax())
    text = Markdown("**{} {} pruned** · prediction ").format(len(pruned), "heads" if len(pruned) != 1 else "head")
    text += (Markdown("{} → **{}**").format(names[p0], names[p1]) if p0 != p1 else
             Markdown("{} (unchanged)").format(names[p1]))
    if label is not None:
        l0, l1 = before.loss(label), after.loss(label)
        text += Markdown(" · loss {:.3f} → {:.3f} ({:+.3f})").format(l0, l1, l1 - l0)
    return text


def selection_summary(change: dict, sampled_from: int | None = None) -> Markdown:
    """Markdown for the re-predicted selection: examples, or (``tag_change``) words and their sentences."""
    n = change["n"]
    words = "sentences" in change
    text = Markdown("**{:,}** word{} in {:,} sentence{}").format(
        n, "s" if n != 1 else "", change["sentences"], "s" if change["sentences"] != 1 else "") if words else \
        Markdown("**{:,}** examples").format(n)
    if sampled_from:
        text += Markdown(" (a random sample of the {:,} selected)").format(sampled_from)
    text += Markdown(" · {} changed: **{:,}** ({:.1%})").format("tags" if words else "predictions", change["flipped"],
                                                                 change["flipped"] / max(n, 1))
    if "loss_change" in change:
        text += Markdown(" · mean loss {:.3f} → {:.3f} (**{:+.3f}**)").format(
            change["loss_before"], change["loss_after"], change["loss_change"])
    if "entity_f1_before" in change:
        text += Markdown(" · entity F1 of the sentences {:.3f} → {:.3f} (**{:+.3f}**)").format(
            change["entity_f1_before"], change["entity_f1_after"],
            change["entity_f1_after"] - change["entity_f1_before"])
    if "accuracy_before" in change:
        accuracy = Markdown(" · word accuracy {:.1%} → {:.1%}") if words else \
            Markdown(" · accuracy {:.1%} → {:.1%}")
        text += accuracy.format(change["accuracy_before"], change["accuracy_after"])
    if change.get("baseline") == "extracted":
        text += Markdown(" · unpruned: the checkpoint's extracted predictions (near ties re-checked)")
    return text


# ---------------------------------------------------------------------------------------------------- tags
def word_tags(logits: np.ndarray) -> np.ndarray:
    """Each word's predicted tag id from a tagger's logits ``[words, C]``; -1 for a word not read (NaN logits)."""
    logits = np.asarray(logits, np.float32)
    read = ~np.isnan(logits).any(-1)
    tags = np.full(len(logits), -1, np.int64)
    tags[read] = logits[read].argmax(-1)
    return tags


def tags_html(words, gold, pred, probs, *, selected: int | None = None) -> HTML:
    """A sentence as a strip of clickable words (``data-click="word:<w>"``), each over its gold tag and, where they
    differ, its predicted tag: a prediction that differs from the gold tag is marked ``wrong`` (red), a word not read
    ``unread``, the selected word ``focus``. ``gold``/``pred`` are tag names (``pred`` None: a word the model did not
    read, shown "—"),
    ``probs`` the predicted tags' probabilities. Tags ride along as ``data-gold``/``data-pred`` for tests."""
    parts = [HTML('<div class="tagstrip">')]
    # two lines per word: the word, then its gold tag, followed by the prediction only where it differs (or the
    # word was not read): a third line per word pushed the saliency below the fold
    block = HTML('<span class="{}" data-click="word:{}" data-gold="{}" data-pred="{}" title="{}"><span class="w">{}'
                 '</span><span class="t"><span class="gold">{}</span><span class="pred">{}</span></span></span>')
    for w, (word, g, p, prob) in enumerate(zip(words, gold, pred, probs)):
        read = p is not None
        classes = "tagw" + ("" if p == g else " wrong" if read else " unread") + (" focus" if w == selected else "")
        title = (HTML("{}: gold {} · predicted {} ({:.1%})").format(word, g, p, float(prob)) if read else
                 HTML("{}: gold {} · not read by the model (cut off by the maximum length)").format(word, g))
        parts.append(block.format(classes, w, g, p if read else "", title, word, g, p if read else "—"))
    parts.append(HTML("</div>"))
    return HTML("").join(parts)


def tag_change(gold, before, after, selected, tag_names) -> dict:
    """What pruning changed over some sentences of a tagged run, as `selection_summary` shows it.

    ``gold`` are tag ids per sentence, ``before``/``after`` the tagger's logits ``[words, C]`` per sentence without
    and with the pruned heads, ``selected`` per sentence which words were selected. Tags changed and word accuracy
    count the selected words; entity-level F1 (seqeval, CoNLL convention) scores the whole sentences against the
    gold tags, a word not read counting as "O" as in the recorded training metrics.
    """
    from ..training.words import entity_scores

    names = np.asarray(list(tag_names) + ["O"], object)  # index -1: a word not read
    pred_before, pred_after = [word_tags(x) for x in before], [word_tags(x) for x in after]
    chosen = [np.asarray(s, bool) for s in selected]
    gold = [np.asarray(g, np.int64) for g in gold]

    def picked(values):
        return np.concatenate([v[s] for v, s in zip(values, chosen)]) if chosen else np.zeros(0, np.int64)

    g, b, a = picked(gold), picked(pred_before), picked(pred_after)
    f1 = [entity_scores([names[x] for x in gold], [names[x] for x in pred])["entity_f1"]
          for pred in (pred_before, pred_after)]
    return {"n": int(len(g)), "sentences": len(gold), "flipped": int((b != a).sum()),
            "accuracy_before": float((b == g).mean()) if len(g) else 0.0,
            "accuracy_after": float((a == g).mean()) if len(g) else 0.0,
            "entity_f1_before": f1[0], "entity_f1_after": f1[1]}


def head_name(head) -> str:
    return f"L{head[0]}·H{head[1]}"
