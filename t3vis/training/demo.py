"""Fine-tune a sequence classifier and record it into a run: the demo (MiniLM on BBC News with injected label
noise) and ``t3vis train`` (your dataset file and model directory). The pipelines that complete the run are run
by ``pipelines.build``, above this library.

A plain PyTorch loop rather than ``Trainer``: on a CPU it is much faster (fused AdamW, length-bucketed batches
with dynamic padding, bf16 autocast where the CPU has fast bf16), and it records through the same
``DynamicsRecorder`` as ``T3VisCallback``. Deterministic for a seed on a given machine and thread count.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import TrainingError
from .config import NER_CONFIG, TrainConfig
from ..models.inference import fast_bf16, model_device, pad_ids, pad_token_id
from .recorder import DynamicsRecorder, autocast
from .words import WordDynamicsRecorder

#: ``progress(stage, fraction)``: what is happening and how much of the whole job is done (0..1).
Progress = Callable[[str, float], None]

#: Relative cost of a token in a training step vs in an eval-mode measurement (forward + backward + optimizer
#: vs forward; measured on the demo, bf16 on 2 cores): weights the progress fraction so the ETA is honest.
TRAIN_TOKEN_COST = 5.0


def quiet(stage: str, fraction: float) -> None:
    """A ``Progress`` that reports nothing."""


# ------------------------------------------------------------------------------------------------ entry points
def train_demo(path=None, *, overwrite: bool = False, seed: int = 0, epochs: int = 3, noise: float = 0.05,
               progress: Progress | None = None, runs_dir=None) -> Path:
    """Fine-tune the bundled MiniLM on BBC News (80/20 stratified split) with ``noise`` of the training labels
    flipped, recording dynamics and checkpoints; returns the run path. ``pipelines.build.build_demo`` runs the
    pipelines on it afterwards (what ``t3vis demo`` does).

    ``path`` defaults to ``t3vis.paths.demo_run_path(runs_dir)``. An existing run there is only replaced with
    ``overwrite=True``.
    """
    from ..data import inject_label_noise, load_bbc_news, split_train_validation
    from ..models import default_model_path
    from ..paths import DEMO_RUN_NAME, demo_run_path

    path = Path(path) if path is not None else demo_run_path(runs_dir)
    (progress or quiet)("loading BBC News", 0.0)
    dataset = split_train_validation(load_bbc_news(), 0.2, seed=seed)
    if noise > 0:
        dataset = inject_label_noise(dataset, noise, seed=seed)
    return train_run(path, dataset, model_path=default_model_path(), config=TrainConfig(epochs=epochs, seed=seed),
                     overwrite=overwrite, progress=progress, name=DEMO_RUN_NAME)


def train_ner_demo(path=None, *, overwrite: bool = False, seed: int = 0, epochs: int | None = None,
                   noise: float = 0.05, progress: Progress | None = None, runs_dir=None) -> Path:
    """Fine-tune the bundled MiniLM as a tagger on the bundled Twitter NER corpus (80/20 split by tweet) with
    ``noise`` of the training mentions flipped to another type; returns the run path (``pipelines.build`` adds
    the rest)."""
    from dataclasses import replace

    from ..data import inject_mention_noise, load_twitter_ner
    from ..models import default_model_path
    from ..paths import NER_DEMO_RUN_NAME, demo_run_path

    path = Path(path) if path is not None else demo_run_path(runs_dir, task="ner")
    (progress or quiet)("loading Twitter NER", 0.0)
    dataset = load_twitter_ner(validation_fraction=0.2, seed=seed)
    if noise > 0:
        dataset = inject_mention_noise(dataset, noise, seed=seed)
    config = replace(NER_CONFIG, seed=seed, epochs=epochs or NER_CONFIG.epochs)
    return train_run(path, dataset, model_path=default_model_path(), config=config, overwrite=overwrite,
                     progress=progress, name=NER_DEMO_RUN_NAME)


def train_run(path, dataset, *, model_path, config: TrainConfig = TrainConfig(), overwrite: bool = False,
              progress: Progress | None = None, name: str | None = None) -> Path:
    """Fine-tune the model at ``model_path`` on ``dataset`` (a ``TextDataset``: ``train`` rows are trained on,
    all rows are measured) and write a run at ``path`` (dynamics and checkpoints; ``pipelines.build`` adds the
    rest)."""
    from ..data.labels import align_labels, align_tags
    from ..data.tagging import TaggedDataset

    config = config.check()
    progress = progress or quiet
    tagging = isinstance(dataset, TaggedDataset)
    # a saved classifier keeps its class ids: the data is numbered through its label2id, never the reverse
    align = align_tags if tagging else align_labels
    dataset = align(dataset, saved_label_names(model_path, "token" if tagging else "sequence"),
                    where=f"{model_path}/config.json id2label")
    recorder_class = WordDynamicsRecorder if tagging else DynamicsRecorder
    # a sequence run's epoch measurements also write each checkpoint's hidden states (no second pass later)
    recorder = recorder_class(path, dataset, max_length=config.max_length, bf16=config.bf16,
                              overwrite=overwrite, name=name, extract=not tagging,
                              training_args={"loop": "t3vis.training.demo", "config": asdict(config)})
    progress("loading model", 0.0)
    torch.manual_seed(config.seed)  # the new classification head and dropout draw from here
    model, tokenizer = recorder.task.load_model(model_path, label_names=recorder.label_names,
                                                attn_implementation="sdpa")
    recorder.start(model, tokenizer, on_batch=lambda rows: progress("recording the pre-trained model", 0.0))
    fine_tune(model, recorder, config, progress=progress)
    recorder.finish()
    progress("trained", 1.0)
    return Path(path)


def saved_label_names(model_path, head: str = "sequence") -> list[str] | None:
    """The class names of the ``head`` classifier saved at ``model_path`` (its config's id2label), or None for a
    base model, another head, placeholder names or an unreadable directory (``load_model`` then says what is
    wrong)."""
    from transformers import AutoConfig

    from ..data import model_label_names
    from ..models.loading import saved_head

    try:
        config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if saved_head(config) != head:
        return None
    return model_label_names(config)


# ------------------------------------------------------------------------------------------------ the loop
def training_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     pool: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar lengths: shuffle, sort within pools of ``pool`` batches, shuffle the batches.

    Dynamic padding then pads little, while every epoch still sees a different, random order.
    """
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start:start + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def linear_schedule(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Learning-rate factor: linear warmup to 1, then linear decay to 0 (the Trainer's default schedule)."""
    warmup = max(1, int(round(total_steps * warmup_fraction)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def fine_tune(model: torch.nn.Module, recorder: DynamicsRecorder, config: TrainConfig,
              progress: Progress = quiet) -> list[dict]:
    """Train on the recorder's ``train`` rows for ``config.epochs`` epochs; the recorder measures each epoch.

    Each training batch's logits go to ``recorder.record_batch`` (when it has one) before the update: the
    in-training dynamics. Stops with ``TrainingError`` at the first NaN/inf loss (the checkpoints written so far
    stay in the run).
    """
    token_ids = recorder.token_ids
    train_rows = np.flatnonzero(recorder.input_split == "train")
    if len(train_rows) == 0:
        raise TrainingError(f"{recorder.path}: the dataset has no 'train' rows to fine-tune on")
    lengths = np.fromiter(map(len, token_ids), np.int64, len(token_ids))
    rng = np.random.default_rng(config.seed)
    device = model_device(model)
    bf16 = fast_bf16(device) if config.bf16 is None else bool(config.bf16)
    pad_id, side = pad_token_id(recorder.tokenizer), getattr(recorder.tokenizer, "padding_side", "right")
    record = getattr(recorder, "record_batch", None)

    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  **_fused(device))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total_steps, config.warmup_fraction))
    # progress in token-cost units, so the fraction grows at a steady rate and the ETA holds
    epoch_cost = TRAIN_TOKEN_COST * lengths[train_rows].sum() + lengths.sum()
    total_cost, done = float(epoch_cost * config.epochs), 0.0

    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        for batch in training_batches(lengths[train_rows], config.batch_size, rng):
            rows = train_rows[batch]
            input_ids, mask = pad_ids([token_ids[r] for r in rows], pad_id, side)
            inputs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
            with autocast(device, bf16):
                out = model(**inputs, labels=recorder.batch_labels(rows).to(device))
            if record is not None:
                record(rows, out.logits)
            loss = out.loss
            value = float(loss.detach())
            recorder.check_finite(model, step=step, loss=value)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            done += TRAIN_TOKEN_COST * lengths[rows].sum()
            progress(f"epoch {epoch}/{config.epochs}: training (loss {value:.3f})", done / total_cost)

        def measured(n_rows, _epoch=epoch):
            nonlocal done
            done += n_rows * lengths.mean()
            progress(f"epoch {_epoch}/{config.epochs}: recording dynamics", min(1.0, done / total_cost))

        metrics = recorder.on_epoch_end(model, epoch=epoch, step=step, on_batch=measured)
        key = next(k for k in ("validation_entity_f1", "validation_accuracy", "train_accuracy") if k in metrics)
        what = "entity F1" if key.endswith("f1") else "accuracy"
        progress(f"epoch {epoch}/{config.epochs}: {what} {metrics[key]:.3f}", min(1.0, done / total_cost))
    return recorder.history


def _fused(device: torch.device) -> dict:
    """``fused=True`` where torch has a fused AdamW for the device (CPU and CUDA: ~4x faster steps on CPU)."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {}
