"""Instance view and pruning: select an example -> saliency + prediction, instance-scale attention patterns of all
heads, and re-predicting a selection with one head pruned. all-MiniLM-L6-v2 (6 x 12 heads) with a 5-class head on
BBC News articles truncated to 128 tokens.

    python benchmarks/bench_instance.py [--n 1000] [--length 128] [--examples 12] [--browser]

Targets (issue 6): example -> rendered saliency + prediction <= 300 ms end to end and <= 100 ms model time;
instance-scale attention patterns for all heads <= 300 ms; pruning one head and re-predicting 1,000 examples
<= 5 s on 2 cores, with progress (timed the first time for the selection, through the view).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from t3vis import serving
from t3vis.analysis.extraction import extract
from t3vis.data.bbc import load_bbc_news
from t3vis.models import default_model_path, load_model, model_info, save_model
from t3vis.models.inference import cached_checkpoint, fast_bf16
from t3vis.store import RunWriter
from t3vis.ui.heads import HeadView, patterns_html, pool_attention
from t3vis.ui.instance import InstanceView
from t3vis.ui.state import ExplorerState


def make_run(root: Path, n: int, length: int) -> Path:
    data = load_bbc_news()
    frame = data.frame.sample(n=n, random_state=0).reset_index(drop=True)[["text", "label"]]
    frame["split"] = "validation"
    model, tokenizer = load_model(default_model_path(), label_names=data.label_names)
    writer = RunWriter.create(root / "run", examples=frame, label_names=data.label_names,
                              model=model_info(model, tokenizer), dataset={"name": "bbc", "n": n},
                              extra_attrs={"training": {"max_length": length}})
    save_model(model, tokenizer, root / "run" / writer.weights_dir("ckpt"))
    writer.add_checkpoint("ckpt", step=0, epoch=0, weights=writer.weights_dir("ckpt"))
    return root / "run"


def write_extracted(run: Path, texts, labels, length: int) -> np.ndarray:
    """The checkpoint's ``pred`` and ``logits`` as the extract pipeline writes them (its own function and numerics)."""
    loaded = cached_checkpoint(str(run / "weights" / "ckpt"), dtype="auto")
    out = extract(loaded.model, loaded.tokenizer, texts, labels, max_length=length)
    writer = RunWriter(str(run))
    writer.write_array("checkpoints/ckpt/pred", out["pred"])
    writer.write_array("checkpoints/ckpt/logits", out["logits"])
    writer.root["checkpoints/ckpt"].attrs.update({"extract": {"max_length": length, "dtype": str(loaded.dtype)}})
    return out["logits"]


def ms(values) -> str:
    values = sorted(values)
    return f"median {1000 * statistics.median(values):.0f} ms, p90 {1000 * values[int(0.9 * (len(values) - 1))]:.0f} ms"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_model_time(server, texts, length):
    """Prediction (forward with attentions) + grad x input saliency for one example, on a pool worker."""
    forward_t, saliency_t, total_t = [], [], []
    for text in texts:
        encoding = server.encode(text, length)
        f, forward = timed(lambda: serving.submit(server.forward, encoding).result())
        s, _ = timed(lambda: serving.submit(server.saliency, encoding, int(forward.probs.argmax())).result())
        forward_t.append(f)
        saliency_t.append(s)
        total_t.append(f + s)
    return forward_t, saliency_t, total_t


def bench_views(run, rows):
    """Python side end to end: set ``state.example`` -> the view's HTML is rebuilt (callbacks run to completion)."""
    instance_state, heads_state = ExplorerState(str(run)), ExplorerState(str(run))
    InstanceView(state=instance_state)
    heads = HeadView(state=heads_state, scale="instance", mode="pattern")
    instance_t, heads_t, render_t = [], [], []
    for row in rows:
        t, _ = timed(lambda: setattr(instance_state, "example", int(row)))
        instance_t.append(t)
        t, _ = timed(lambda: setattr(heads_state, "example", int(row)))
        heads_t.append(t)
        assert heads._grid.html.count("data:image/png") == 72
    forward = asyncio.run(heads.model.forward(int(rows[-1])))
    for _ in range(len(rows)):
        t, _ = timed(lambda: patterns_html(pool_attention(forward.attentions)))
        render_t.append(t)
    return instance_t, heads_t, render_t


def bench_pruning(run, server, texts, labels, length, stored):
    """Prune head (3, 5) in the views, then re-predict the whole selection the way the button does, first time."""
    state = ExplorerState(str(run))
    view = InstanceView(state=state)
    HeadView(state=state).click("prune:3,5")
    updates = []
    view._progress.param.watch(lambda event: updates.append(event.new), "value")
    first, change = timed(lambda: asyncio.run(view.repredict_selection()))
    # what the stored baseline stands in for: a fresh unpruned pass (timed: the old first-time cost), and the exact
    # change it would give
    fresh_t, fresh = timed(lambda: server.predict(texts, labels, (), max_length=length))
    pruned = server.predict(texts, labels, ((3, 5),), max_length=length)
    noise = {"agree": float((stored.argmax(1) == fresh.pred).mean()),
             "dlogit": float(np.abs(stored - fresh.logits).mean()),
             "rechecked": int(serving.needs_recheck(stored, pruned.pred).sum()),
             "exact": serving.prediction_change(fresh, pruned)}
    return first, len(updates), change, fresh_t, noise


#: Start watching (every animation frame, not Playwright's 100-500 ms back-off) for the instance view to show the
#: tokens of example ``row``; the page records when. Elapsed time is measured in the page, from just before the click.
WATCH = """(row) => {
  const deep = (root, selector) => {
    const hit = root.querySelector(selector);
    if (hit) return hit;
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) { const found = deep(el.shadowRoot, selector); if (found) return found; }
    }
    return null;
  };
  window.t3Start = performance.now();
  window.t3Done = null;
  const poll = () => {
    if (deep(document, `.tokens[data-example="${row}"] .tok`)) { window.t3Done = performance.now(); return; }
    requestAnimationFrame(poll);
  };
  poll();
}"""


def bench_browser(run, rows, with_heads: bool):
    """Click table rows in chromium; time until the instance view shows the clicked example's coloured tokens.

    ``with_heads`` adds the head view at instance scale in pattern mode (72 thumbnails redrawn per click).
    """
    import panel as pn
    from playwright.sync_api import sync_playwright

    def app():
        state = ExplorerState(str(run))
        frame = state.data.rows(np.asarray(rows), ["text", "label"])
        table = pn.widgets.Tabulator(frame.reset_index(), show_index=False, disabled=True, height=400,
                                     pagination=None)
        table.on_click(lambda event: setattr(state, "example", int(frame.index[event.row])))
        views = [HeadView(state=state, scale="instance", mode="pattern")] if with_heads else []
        return pn.Column(table, pn.Row(*views, InstanceView(state=state)))

    server_id = uuid.uuid4().hex
    thread = pn.serve(app, port=0, address="127.0.0.1", threaded=True, show=False, server_id=server_id)
    while server_id not in pn.state._servers:
        time.sleep(0.05)
    url = f"http://localhost:{pn.state._servers[server_id][0].port}/"
    times = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True,
                args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(url)
            page.locator(".tabulator-row").first.wait_for()
            for k, row in enumerate(rows):
                page.evaluate(WATCH, row)
                page.locator(".tabulator-row").nth(k).click()
                page.wait_for_function("window.t3Done !== null", timeout=20_000)
                times.append(page.evaluate("window.t3Done - window.t3Start") / 1000)
            browser.close()
    finally:
        thread.stop()
    return times[1:]  # the first click also loads the model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="examples in the selection that is re-predicted")
    ap.add_argument("--length", type=int, default=128, help="tokens per example (the run's max_length)")
    ap.add_argument("--examples", type=int, default=12, help="examples selected one by one")
    ap.add_argument("--browser", action="store_true", help="also time row click -> rendered tokens in chromium")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; pool workers {serving.WORKERS}; "
          f"bf16 batches {fast_bf16()}")
    tmp = Path(tempfile.mkdtemp(prefix="t3vis-bench-instance-"))
    try:
        run = make_run(tmp, args.n, args.length)
        server = serving.get_server(run / "weights" / "ckpt")
        from t3vis.store import Run

        stored = Run(str(run))
        texts = [str(t) for t in stored.column("text")]
        labels = stored.column("label")
        lengths = [len(server.encode(t, args.length)) for t in texts[: 4 * args.examples]]
        rows = [i for i, n in enumerate(lengths) if n == args.length][: args.examples]
        stored_logits = write_extracted(run, texts, labels, args.length)
        serving.submit(server.forward, server.encode(texts[0], args.length)).result()  # warm up
        serving.submit(server.saliency, server.encode(texts[0], args.length), 0).result()

        forward_t, saliency_t, model_t = bench_model_time(server, [texts[i] for i in rows], args.length)
        instance_t, heads_t, render_t = bench_views(run, rows)
        first, updates, change, fresh_t, noise = bench_pruning(run, server, texts, labels, args.length, stored_logits)
        print(f"\nselect an example ({args.length} tokens), {len(rows)} examples:")
        print(f"  model time, forward with attentions: {ms(forward_t)}")
        print(f"  model time, grad x input saliency:   {ms(saliency_t)}")
        print(f"  model time, prediction + saliency:   {ms(model_t)}")
        print(f"  instance view, example -> HTML ready (Python): {ms(instance_t)}")
        print("instance-scale attention patterns, 6x12 heads:")
        print(f"  head view, example -> 72 thumbnails ready (forward included): {ms(heads_t)}")
        print(f"  of which pooling + 72 PNGs + HTML: {ms(render_t)}")
        print(f"re-predict {args.n} examples with head (3, 5) pruned:")
        print(f"  first time for the selection, through the view (unpruned side from the extracted logits, "
              f"{noise['rechecked']} examples re-checked afresh): {first:.2f} s, {updates} progress updates; "
              f"{change['flipped']} predictions changed, mean loss {change['loss_change']:+.4f}")
        exact = noise["exact"]
        print(f"  a fresh unpruned pass instead (what the first time cost without extracted logits): {fresh_t:.2f} s")
        print(f"  extracted vs fresh unpruned logits: predictions agree {noise['agree']:.2%}, "
              f"mean |delta logit| {noise['dlogit']:.4f}; exact change: {exact['flipped']} predictions, "
              f"mean loss {exact['loss_change']:+.4f}")
        if args.browser:
            print("browser (chromium on the same 2 cores), row click -> coloured tokens of the new example shown:")
            print(f"  instance view alone: {ms(bench_browser(run, rows, False))}")
            print(f"  with the head view showing instance-scale patterns: {ms(bench_browser(run, rows, True))}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
