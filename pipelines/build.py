"""Train, then fill the run: the orchestration above the library (``t3vis demo``, ``t3vis train`` and the page's
"Build the demo run" call these). Training (``t3vis.training``) writes dynamics and checkpoints; the pipelines
(extract, importance, project) add hidden states, head importance and projections; the run is marked complete last.
"""

from __future__ import annotations

from pathlib import Path

from t3vis.store import RunWriter
from t3vis.training.demo import Progress, TrainConfig, quiet, train_demo, train_ner_demo, train_run

#: Share of the whole job's time spent in the pipelines after training (weights the progress fraction), measured
#: on the demos: classification 47-50 s of 202-206 s (training extracts the checkpoints), NER 136 s of 319 s.
PIPELINE_SHARE = 0.25
NER_PIPELINE_SHARE = 0.4
#: Pipeline steps with their usual share of the pipelines' time (after extraction the others run at once).
PIPELINE_STEPS = {"extract": 0.55, "importance": 0.2, "project": 0.2, "neighbours": 0.05}


def pipeline_fraction(finished: dict[str, float], steps: dict[str, float] = PIPELINE_STEPS) -> float:
    """How far the pipelines are (0..1) from each step's finished share of its tasks (``finished[step]``, 0..1):
    the ``steps`` weighted by their share (others ignored). Never goes back while each share only grows, however
    the steps that run at once interleave their reports."""
    total = sum(steps.values())
    return sum(steps[step] * min(max(share, 0.0), 1.0) for step, share in finished.items() if step in steps) / total


#: The NER demo's pipelines: its runs have ~46k word points per checkpoint, where one UMAP layout or exact kNN graph
#: costs 10-20 s (classification demo: 2,225 points). All layers and checkpoints (2 x 7) took 356 s on a quiet
#: 2-core box, 285 s of it projections and neighbours; the last layer of every third checkpoint (before, midway
#: through and at the end of training) keeps the demo within its 6 minutes. ``t3vis pipeline RUN --layer 3`` adds
#: the rest to a built run.
NER_DEMO_CHECKPOINT_STEP = 3


def spread_checkpoints(checkpoints: list[str], step: int = NER_DEMO_CHECKPOINT_STEP) -> list[str]:
    """Every ``step``-th checkpoint in training order, always the first (before training) and the last."""
    chosen = checkpoints[::step]
    return chosen + [checkpoints[-1]] if checkpoints and chosen[-1] != checkpoints[-1] else chosen


def ner_demo_pipeline(path) -> dict:
    """``run_pipelines`` options for the NER demo run at ``path`` (the last layer of ``spread_checkpoints``)."""
    from t3vis.store import Run

    run = Run(str(path))
    layers = [run.num_layers]
    return {"checkpoints": spread_checkpoints(run.checkpoints), "project": {"layers": layers},
            "neighbours": {"layers": layers}}


def run_pipelines(path, progress: Progress = quiet, **options) -> dict:
    """Extract, importance, project and neighbours for every checkpoint (``options``: ``run_steps``'s, e.g.
    ``checkpoints``) on a LocalCluster without a dashboard, reporting each finished task (so a long projection step
    moves the bar and its ETA)."""
    import threading

    from .run import run_pipeline

    finished: dict[str, float] = {}
    lock = threading.Lock()  # steps after extraction report from their own threads
    # a run whose training extracted every checkpoint spends no time on extraction: the bar leaves it out
    steps = PIPELINE_STEPS if extraction_pending(path, options.get("checkpoints")) else \
        {step: share for step, share in PIPELINE_STEPS.items() if step != "extract"}

    def report(step: str, share: float, message: str) -> None:
        with lock:
            finished[step] = max(finished.get(step, 0.0), share)
            progress(f"pipeline {message}", pipeline_fraction(finished, steps))

    def echo(message: str) -> None:
        step = message.split(":", 1)[0].strip()
        if step in PIPELINE_STEPS:
            report(step, 1.0, message)

    def task_done(step: str, done: int, total: int) -> None:
        report(step, done / max(total, 1), f"{step}: {done}/{total} tasks")

    progress("pipeline: extracting hidden states", 0.0)
    return run_pipeline(str(path), progress=task_done, echo=echo, dashboard=False, **options)


def extraction_pending(path, checkpoints: list[str] | None) -> bool:
    """Whether any of ``checkpoints`` (default: all) of the run at ``path`` still needs extracting."""
    from t3vis.store import Run

    run = Run(str(path))
    return not all(run.checkpoint(name).complete for name in checkpoints or run.checkpoints)


def _then_pipelines(train, path, progress: Progress | None, pipeline: bool, options=None,
                    pipeline_share: float = PIPELINE_SHARE) -> Path:
    """``train(progress)`` (writes the run at ``path``), then with ``pipeline`` the pipelines (``options(path)``:
    their options for the trained run), then ``complete``."""
    progress = progress or quiet
    share = 1.0 - pipeline_share if pipeline else 1.0
    train(lambda stage, f: progress(stage, f * share))
    chosen = options(path) if pipeline and options is not None else {}
    if pipeline and run_pipelines(path, progress=lambda s, f: progress(s, share + f * (1 - share)), **chosen):
        RunWriter(str(path)).update_attrs(complete=True)
    progress("done", 1.0)
    return Path(path)


def build_demo(path=None, *, overwrite: bool = False, seed: int = 0, epochs: int | None = None,
               noise: float = 0.05, progress: Progress | None = None, pipeline: bool = True, runs_dir=None,
               task: str | None = None) -> Path:
    """The demo run (``t3vis.training.demo.train_demo``; ``task`` "ner": ``train_ner_demo``), then the pipelines
    on it; returns the run path."""
    from t3vis.paths import demo_run_path

    path = Path(path) if path is not None else demo_run_path(runs_dir, task=task)
    train = train_ner_demo if task == "ner" else train_demo
    epochs = epochs or (None if task == "ner" else 3)
    return _then_pipelines(lambda p: train(path, overwrite=overwrite, seed=seed, epochs=epochs, noise=noise,
                                           progress=p), path, progress, pipeline,
                           ner_demo_pipeline if task == "ner" else None,
                           NER_PIPELINE_SHARE if task == "ner" else PIPELINE_SHARE)


def train_and_extract(path, dataset, *, model_path, config: TrainConfig = TrainConfig(), overwrite: bool = False,
                      progress: Progress | None = None, pipeline: bool = True, name: str | None = None) -> Path:
    """``t3vis.training.demo.train_run`` on ``dataset``, then the pipelines on the run; returns the run path."""
    from t3vis.data.tagging import TaggedDataset

    share = NER_PIPELINE_SHARE if isinstance(dataset, TaggedDataset) else PIPELINE_SHARE
    return _then_pipelines(lambda p: train_run(path, dataset, model_path=model_path, config=config,
                                               overwrite=overwrite, progress=p, name=name), path, progress, pipeline,
                           pipeline_share=share)
