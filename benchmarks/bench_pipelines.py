"""Benchmarks of the Dask pipelines (issue 4). Each section prints markdown rows for benchmarks/RESULTS.md.

    python benchmarks/bench_pipelines.py extract      # pipeline vs bare forward loop, same batches and dtype
    python benchmarks/bench_pipelines.py scaling      # 1 worker vs 2 workers
    python benchmarks/bench_pipelines.py importance   # head importance vs one forward+backward pass
    python benchmarks/bench_pipelines.py umap pca     # projection speed (100k x 384 UMAP, 1M x 384 PCA)
    python benchmarks/bench_pipelines.py align        # aligned vs independent layouts across checkpoints
    python benchmarks/bench_pipelines.py memory       # worker peak RSS, 10k vs 100k rows
    python benchmarks/bench_pipelines.py all

Model: the bundled all-MiniLM-L6-v2 with a 5-label head, on the BBC News articles truncated to 128 tokens.
Everything runs on this machine's CPU; absolute times move with the load of a shared box, ratios measured in the
same run are the figures to read.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORK = Path(os.environ.get("T3VIS_BENCH_DIR", Path(tempfile.gettempdir()) / "t3vis_bench_pipelines"))
MAX_LENGTH = 128
CHUNK_ROWS = 256


def row(*cells) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


# ---------------------------------------------------------------------------------------------------- fixtures
def bbc_run() -> Path:
    """A run of all 2,225 BBC News articles with one checkpoint: MiniLM + a fresh 5-label head (built once)."""
    base = WORK / "bbc-base"
    if (base / "store.zarr").exists():
        return base
    from t3vis.data import load_bbc_news, split_train_validation
    from t3vis.models import default_model_path, load_model, model_info, save_model
    from t3vis.store import RunWriter

    ds = split_train_validation(load_bbc_news(), 0.2, seed=0)
    model, tokenizer = load_model(default_model_path(), label_names=ds.label_names)
    writer = RunWriter.create(base, examples=ds.frame, label_names=ds.label_names,
                              model=model_info(model, tokenizer), dataset=ds.describe(), overwrite=True,
                              extra_attrs={"training": {"max_length": MAX_LENGTH}})
    save_model(model, tokenizer, base / writer.weights_dir("ckpt-0"))
    writer.add_checkpoint("ckpt-0", step=0, epoch=0, weights=writer.weights_dir("ckpt-0"))
    return base


def fresh_copy(base: Path, name: str) -> Path:
    """A copy of ``base`` without extracted arrays; the weights are linked, not copied."""
    target = WORK / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(base, target, ignore=shutil.ignore_patterns("weights", ".staging", ".progress"))
    os.symlink(base / "weights", target / "weights")
    return target


# ---------------------------------------------------------------------------------------------------- extract
def bare_loop(run_path: Path, dtype) -> float:
    """A bare forward loop over the pipeline's batches (same chunks, same length sort, same dtype): rows/s."""
    import torch

    from t3vis.models import load_checkpoint
    from t3vis.models.inference import length_batches, pad_ids, tokenize
    from t3vis.store import Run

    torch.set_num_threads(1)
    run = Run(run_path)
    model, tokenizer = load_checkpoint(run.checkpoint("ckpt-0").weights_path, attn_implementation="sdpa",
                                       dtype=dtype)
    texts = run.column("text")
    batches = []
    for start in range(0, len(texts), CHUNK_ROWS):
        ids = tokenize(tokenizer, texts[start:start + CHUNK_ROWS], MAX_LENGTH)
        batches += [pad_ids([ids[i] for i in rows], tokenizer.pad_token_id)
                    for rows in length_batches([len(x) for x in ids], 64)]
    started, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for input_ids, mask in batches:
            model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    return len(texts) / (time.perf_counter() - started), len(texts) / (time.process_time() - cpu)


def worker_cpu_seconds():
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def warm_up(client) -> None:
    """Import torch and transformers on every worker, as the bare loop's process already has (a one-off per worker
    that a long extraction amortises); the model itself is still loaded inside the timed run."""
    def imports():
        import transformers  # noqa: F401

        import t3vis.models.loading  # noqa: F401

    client.run(imports)


def pipeline_extract(run_path: Path, workers: int) -> tuple[float, float]:
    """Rows per wall second and rows per worker CPU second (all workers' CPU added up)."""
    from pipelines import dask_client, run_extract

    with dask_client(n_workers=workers, threads_per_worker=1, dashboard=False) as client:
        warm_up(client)
        before = sum(client.run(worker_cpu_seconds).values())
        summary = run_extract(client, str(run_path), chunk_rows=CHUNK_ROWS, progress=False)
        cpu = sum(client.run(worker_cpu_seconds).values()) - before
    return summary["rows"] / summary["seconds"], summary["rows"] / cpu


def bench_extract() -> None:
    import torch

    from t3vis.models.inference import resolve_dtype

    base = bbc_run()
    dtype = resolve_dtype("auto", "cpu")
    bare, piped = [], []
    for i in range(3):  # interleaved, so both see the same load
        bare.append(bare_loop(base, dtype))
        piped.append(pipeline_extract(fresh_copy(base, f"extract-{i}"), workers=1))
    print(f"\nExtraction, MiniLM-L6 on 2,225 BBC articles (<= {MAX_LENGTH} tokens), dtype {dtype}, "
          f"chunks of {CHUNK_ROWS} rows, batches of 64; 1 worker x 1 thread vs a bare loop with 1 torch thread. "
          "Wall-clock rates swing with the other processes on the box; CPU-time rates (rows per CPU second of the "
          "process doing the work) do not")
    row("measure", "run 1", "run 2", "run 3", "median")
    row("---", "---", "---", "---", "---")
    for k, unit in ((0, "rows/s wall"), (1, "rows per CPU s")):
        b = [x[k] for x in bare]
        p = [x[k] for x in piped]
        row(f"bare forward loop ({unit})", *(f"{x:.0f}" for x in b), f"{np.median(b):.0f}")
        row(f"pipeline, incl. model load, tokenizer, Zarr writes ({unit})", *(f"{x:.0f}" for x in p),
            f"{np.median(p):.0f}")
        row(f"pipeline / bare ({unit})", *(f"{x / y:.0%}" for x, y in zip(p, b)),
            f"**{np.median(p) / np.median(b):.0%}**")
    del torch


def bench_scaling() -> None:
    base = bbc_run()
    one = [pipeline_extract(fresh_copy(base, "scale-1"), workers=1)]
    two = [pipeline_extract(fresh_copy(base, "scale-2"), workers=2)]
    one.append(pipeline_extract(fresh_copy(base, "scale-1"), workers=1))
    two.append(pipeline_extract(fresh_copy(base, "scale-2"), workers=2))
    print(f"\nWorkers (1 thread each, LocalCluster), extraction of 2,225 BBC articles, {CHUNK_ROWS}-row tasks, "
          f"load average before: {os.getloadavg()[0]:.1f}")
    row("workers", "rows/s wall (2 runs)", "rows per worker-CPU s", "cores the workers got (CPU s / wall s)",
        "speed-up (wall, medians)")
    row("---", "---", "---", "---", "---")
    base_rate = np.median([r[0] for r in one])
    for n, runs in ((1, one), (2, two)):
        rate = np.median([r[0] for r in runs])
        row(n, " / ".join(f"{r[0]:.0f}" for r in runs), " / ".join(f"{r[1]:.0f}" for r in runs),
            " / ".join(f"{r[0] / r[1]:.2f}" for r in runs), f"**{rate / base_rate:.2f}x**")


# ---------------------------------------------------------------------------------------------------- importance
def bench_importance(sample: int = 256) -> None:
    import torch
    import torch.nn.functional as F

    from t3vis.analysis.importance import head_importance
    from t3vis.models import load_checkpoint
    from t3vis.models.inference import length_batches, pad_ids, resolve_dtype, tokenize
    from t3vis.store import Run

    from pipelines.importance import importance_sample

    torch.set_num_threads(1)
    run = Run(bbc_run())
    rows, _ = importance_sample(run, sample)
    texts, labels = run.column("text", rows), run.column("label", rows).astype(np.int64)
    dtype = resolve_dtype("auto", "cpu")
    model, tokenizer = load_checkpoint(run.checkpoint("ckpt-0").weights_path, dtype=dtype)  # eager attention
    ids = tokenize(tokenizer, texts, MAX_LENGTH)
    batches = [(pad_ids([ids[i] for i in b], tokenizer.pad_token_id), torch.as_tensor(labels[b]))
               for b in length_batches([len(x) for x in ids], 32)]

    def forward_backward():
        for p in model.parameters():
            p.requires_grad_(True)
        for (input_ids, mask), y in batches:
            loss = F.cross_entropy(model(input_ids=input_ids, attention_mask=mask).logits.float(), y,
                                   reduction="sum")
            loss.backward()
            model.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(False)

    def forward():
        with torch.inference_mode():
            for (input_ids, mask), _ in batches:
                model(input_ids=input_ids, attention_mask=mask)

    def timed(fn):
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    forward()  # warm-up
    results = {"forward": [], "forward+backward": [], "importance + attention (m=64)": [], "importance only": []}
    for _ in range(2):
        results["forward"].append(timed(forward))
        results["forward+backward"].append(timed(forward_backward))
        results["importance + attention (m=64)"].append(
            timed(lambda: head_importance(model, tokenizer, texts, labels, batch_size=32, max_length=MAX_LENGTH,
                                          attention_size=64)))
        results["importance only"].append(
            timed(lambda: head_importance(model, tokenizer, texts, labels, batch_size=32, max_length=MAX_LENGTH,
                                          attention_size=0)))
    base = np.median(results["forward+backward"])
    print(f"\nHead importance, MiniLM-L6 (6 x 12 heads), {sample} validation articles (<= {MAX_LENGTH} tokens), "
          f"batches of 32, {dtype}, 1 thread, eager attention")
    row("pass", "seconds (median of 2)", "vs forward+backward")
    row("---", "---", "---")
    for name, values in results.items():
        t = np.median(values)
        row(name, f"{t:.2f}", f"**{t / base:.2f}x**" if "importance" in name else f"{t / base:.2f}x")


# ---------------------------------------------------------------------------------------------------- projections
def clustered(n: int, d: int = 384, k: int = 20, seed: int = 0, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d)).astype(np.float32)
    out = np.empty((n, d), dtype)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        out[start:stop] = centers[rng.integers(0, k, stop - start)] + rng.normal(0, 1, (stop - start, d))
    return out


def bench_umap(n: int = 100_000) -> None:
    import numba

    from t3vis.analysis.projection import umap_2d

    umap_2d(clustered(5000, seed=9))  # warm-up: numba compilation (>= 4096 rows, or umap skips NN-descent)
    x = clustered(n)
    x2 = x + np.random.default_rng(1).normal(0, 0.3, x.shape).astype(np.float32)  # a "next checkpoint"
    started = time.perf_counter()
    first = umap_2d(x)
    t_first = time.perf_counter() - started
    started = time.perf_counter()
    umap_2d(x2, init=first)
    t_next = time.perf_counter() - started
    print(f"\nUMAP of {n:,} x 384 (20 clusters), after warm-up; seeded (reproducible: umap-learn then runs its "
          f"layout on one thread), PCA to 50 dims first; numba threads {numba.get_num_threads()}")
    row("layout", "seconds")
    row("---", "---")
    row("first checkpoint (spectral init, 200 epochs)", f"**{t_first:.1f}**")
    row("next checkpoint (warm start from previous, 100 epochs)", f"**{t_next:.1f}**")


def bench_pca(n: int = 1_000_000) -> None:
    from t3vis.analysis.projection import pca

    x = clustered(n, dtype=np.float16)
    pca(x[:10_000])
    times = []
    for _ in range(3):
        started = time.perf_counter()
        pca(x, 2)
        times.append(time.perf_counter() - started)
    print(f"\nPCA of {n:,} x 384 float16 (as stored) to 2-D: covariance from 262,144 evenly spaced rows, every row "
          f"projected; torch with {__import__('torch').get_num_threads()} threads; load average "
          f"{os.getloadavg()[0]:.1f}")
    row("rows", "seconds (3 runs)", "median")
    row("---", "---", "---")
    row(f"{n:,}", " / ".join(f"{t:.2f}" for t in times), f"**{np.median(times):.2f}**")


def bench_align(layers=(3, 4, 5, 6)) -> None:
    """Aligned vs independent layouts of a sequence of representations of the same 2,225 articles."""
    from t3vis.analysis.projection import project_sequence
    from t3vis.store import Run

    path = WORK / "extract-0"
    if not (path / "store.zarr" / "checkpoints" / "ckpt-0" / "hidden_cls" / "zarr.json").exists():
        pipeline_extract(fresh_copy(bbc_run(), "extract-0"), workers=1)
    ckpt = Run(path).checkpoint("ckpt-0")
    xs = [ckpt.hidden(layer, "mean").astype(np.float32) for layer in layers]
    print(f"\nAlignment: MiniLM mean-pooled states of layers {list(layers)} of 2,225 BBC articles as stand-ins for "
          "consecutive checkpoints (each changes the representation a little, as fine-tuning does); mean over the "
          f"{len(layers) - 1} consecutive pairs; 0 = identical")
    row("method", "aligned disparity", "independent disparity", "aligned displacement", "independent displacement")
    row("---", "---", "---", "---", "---")
    for method in ("umap", "tsne", "pca"):
        aligned = project_sequence(xs, method, aligned=True)
        independent = project_sequence(xs, method, aligned=False)
        mean = lambda seq, key: np.mean([getattr(s, key) for s in seq[1:]])  # noqa: E731
        row(method, f"**{mean(aligned, 'disparity'):.3f}**", f"{mean(independent, 'disparity'):.3f}",
            f"**{mean(aligned, 'displacement'):.3f}**", f"{mean(independent, 'displacement'):.3f}")


# ---------------------------------------------------------------------------------------------------- memory
def bench_memory(sizes=(10_000, 100_000)) -> None:
    """Peak RSS of the workers running extract + importance + PCA projection on a tiny model, by run size."""
    from tests.fixtures import make_tiny_run

    from pipelines import dask_client, run_steps

    def peak_rss():
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB

    print("\nWorker peak RSS (2 workers x 1 thread, LocalCluster, fresh per size), tiny BERT checkpoint, "
          f"{CHUNK_ROWS * 16}-row extraction tasks; extract + importance, then + PCA projection")
    row("rows", "extract + importance: peak RSS per worker (MiB)", "+ PCA of 2 layers: peak RSS per worker (MiB)")
    row("---", "---", "---")
    for n in sizes:
        shutil.rmtree(WORK / f"mem-{n}", ignore_errors=True)
        path = make_tiny_run(WORK / f"mem-{n}", n=n, checkpoints=1)
        with dask_client(n_workers=2, dashboard=False) as client:
            run_steps(client, str(path), ("extract", "importance"), progress=False, echo=lambda m: None,
                      extract=dict(chunk_rows=CHUNK_ROWS * 16))
            first = sorted(client.run(peak_rss).values())
            run_steps(client, str(path), ("project",), progress=False, echo=lambda m: None,
                      project=dict(methods=("pca",)))
            second = sorted(client.run(peak_rss).values())
        row(f"{n:,}", " / ".join(f"{v:.0f}" for v in first), " / ".join(f"{v:.0f}" for v in second))


SECTIONS = {"extract": bench_extract, "scaling": bench_scaling, "importance": bench_importance, "umap": bench_umap,
            "pca": bench_pca, "align": bench_align, "memory": bench_memory}

if __name__ == "__main__":
    chosen = sys.argv[1:] or ["all"]
    if chosen == ["all"]:
        chosen = list(SECTIONS)
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"# bench_pipelines: {', '.join(chosen)}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name in chosen:
        SECTIONS[name]()
