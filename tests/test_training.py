"""Training capture: the Trainer callback, the loop recorder, the fine-tune loop and the demo/train commands.

Everything trains tiny random-init BERTs (tests/fixtures.py) through the real ``Trainer`` or the real loop.
"""

from __future__ import annotations

import argparse
import math
import statistics
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import log_softmax
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

from t3vis.analysis.datamaps import run_data_map
from t3vis.errors import DatasetError, RunExistsError, TrainingError
from t3vis.models import load_checkpoint, save_model
from t3vis.store import Run, validate
from t3vis.training import T3VisCallback, TrainConfig, dynamics_from_logits, fast_bf16, train_run
from t3vis.training.commands import register
from t3vis.training.demo import linear_schedule, training_batches
from t3vis.training.recorder import DynamicsRecorder, as_text_dataset

from tests.fixtures import TOPICS, one_thread, tiny_model, tiny_texts, tiny_tokenizer  # noqa: F401 (autouse)

LABELS = list(TOPICS)[:3]
N, N_TRAIN, EPOCHS, MAX_LENGTH = 120, 96, 3, 48
#: No dropout: a training forward pass is then a function of the weights alone, so it can be recomputed.
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def examples(n: int = N, n_train: int = N_TRAIN, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(LABELS), n)
    return pd.DataFrame({"text": tiny_texts(n, labels, LABELS, rng), "label": labels,
                         "split": np.where(np.arange(n) < n_train, "train", "validation"),
                         "source": rng.choice(["wire", "web"], n)})


class Tokenized(torch.utils.data.Dataset):
    """What a user hands the Trainer: tokenized training rows (the callback measures its own copy)."""

    def __init__(self, frame: pd.DataFrame, tokenizer):
        self.encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=MAX_LENGTH)
        self.labels = frame["label"].tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.encoded["input_ids"][i], "attention_mask": self.encoded["attention_mask"][i],
                "labels": self.labels[i]}


def trainer_for(model, tokenizer, frame, out: Path, callbacks, epochs: int = EPOCHS) -> Trainer:
    args = TrainingArguments(output_dir=str(out / "trainer"), num_train_epochs=epochs, per_device_train_batch_size=16,
                             learning_rate=3e-3, use_cpu=True, report_to="none", save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=0)
    return Trainer(model=model, args=args, train_dataset=Tokenized(frame[frame.split == "train"], tokenizer),
                   processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer), callbacks=callbacks)


class ForwardLog:
    """Every training forward pass of ``model``: the weights it ran with (before that step's update) and its
    inputs, captured by a forward pre-hook, independently of the recorder."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, module, args, kwargs):
        if module.training and torch.is_grad_enabled():
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            self.calls.append((state, kwargs["input_ids"].detach().clone(), kwargs["attention_mask"].detach().clone()))

    def recompute(self, epochs: int, texts, labels, tokenizer, n_labels: int) -> dict[str, np.ndarray]:
        """Mean p(gold) and margin per epoch and row, from unbatched forwards of each captured step's weights."""
        self.handle.remove()
        encoded = tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH)["input_ids"]
        rows = {tuple(ids): i for i, ids in enumerate(encoded)}
        assert len(rows) == len(texts)  # unique inputs: a sequence names its row
        per_epoch = len(self.calls) // epochs
        assert per_epoch * epochs == len(self.calls)
        sums = {k: np.zeros((epochs, len(texts))) for k in ("gold", "margin", "count")}
        model = tiny_model(n_labels, **NO_DROPOUT)
        for step, (state, input_ids, mask) in enumerate(self.calls):
            model.load_state_dict(state)
            for ids, keep in zip(input_ids, mask.bool()):
                row = rows[tuple(ids[keep].tolist())]
                with torch.no_grad():
                    prob = torch.softmax(model(input_ids=ids[keep][None]).logits[0].double(), 0).numpy()
                gold = prob[labels[row]]
                e = step // per_epoch
                sums["gold"][e, row] += gold
                sums["margin"][e, row] += gold - np.delete(prob, labels[row]).max()
                sums["count"][e, row] += 1
        with np.errstate(invalid="ignore"):
            return {"train_gold_prob": sums["gold"] / sums["count"], "train_margin": sums["margin"] / sums["count"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny BERT (no dropout) trained for 3 epochs through the real Trainer with the callback."""
    tmp = tmp_path_factory.mktemp("trained")
    tokenizer = tiny_tokenizer(tmp / "tokenizer")
    model = tiny_model(len(LABELS), seed=0, **NO_DROPOUT)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    frame = examples()
    callback = T3VisCallback(tmp / "run", examples=frame, label_names=LABELS, max_length=MAX_LENGTH, bf16=False,
                             extract=True)
    log = ForwardLog(model)
    trainer_for(model, tokenizer, frame, tmp, [callback]).train()
    return {"run": Run(tmp / "run"), "model": model.eval(), "tokenizer": tokenizer, "initial": initial,
            "frame": frame, "tmp": tmp, "log": log}


# ------------------------------------------------------------------------------------------------ pure parts
def test_dynamics_from_logits_matches_per_example_reference():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (40, 4))
    labels = rng.integers(0, 4, 40)
    got = dynamics_from_logits(logits, labels)
    for i in range(40):
        probs = [math.exp(z) for z in logits[i]]
        probs = [p / sum(probs) for p in probs]
        gold = probs[labels[i]]
        best_other = max(p for c, p in enumerate(probs) if c != labels[i])
        assert got["gold_prob"][i] == pytest.approx(gold, abs=1e-6)
        assert got["margin"][i] == pytest.approx(gold - best_other, abs=1e-6)
        assert got["loss"][i] == pytest.approx(-log_softmax(logits[i])[labels[i]], abs=1e-5)
        assert got["pred"][i] == int(np.argmax(probs))


def test_training_batches_cover_each_row_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 200, 1000)
    batches = training_batches(lengths, 16, np.random.default_rng(3), pool=10)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    assert max(len(b) for b in batches) == 16
    padded = sum(len(b) * lengths[b].max() for b in batches)
    shuffled = rng.permutation(1000)
    unsorted = sum(16 * lengths[shuffled[i:i + 16]].max() for i in range(0, 1000, 16))
    assert padded < 0.8 * unsorted  # bucketing saves padding
    assert not np.array_equal(rows, training_batches(lengths, 16, np.random.default_rng(4), pool=10)[0])


def test_linear_schedule_warms_up_then_decays_to_zero():
    factor = linear_schedule(100, 0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(55) == pytest.approx(0.5) and factor(100) == 0.0


def test_fast_bf16_follows_the_cpu_flags():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert fast_bf16("cpu") == bool({"amx_bf16", "avx512_bf16"} & flags)


def test_examples_accept_a_datasets_dataset_with_class_labels():
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"sentence": Value("string"), "topic": ClassLabel(names=["a", "b", "c"])})
    data = Dataset.from_dict({"sentence": ["x y", "z", "w"], "topic": [2, 0, 1]}, features=features)
    ds = as_text_dataset(data, text_column="sentence", label_column="topic")
    assert ds.label_names == ["a", "b", "c"]
    assert ds.frame["label"].tolist() == [2, 0, 1] and set(ds.frame["split"]) == {"train"}


# ------------------------------------------------------------------------------------------------ Trainer + callback
def test_callback_records_every_epoch_and_checkpoint(trained):
    run = trained["run"]
    dynamics = run.dynamics()
    assert run.epochs() == [1, 2, 3] and dynamics.epochs.tolist() == [1, 2, 3]
    for key in ("gold_prob", "pred", "loss", "margin"):
        assert getattr(dynamics, key).shape == (EPOCHS, N)
    assert run.checkpoints == ["epoch-0", "epoch-1", "epoch-2", "epoch-3"]
    steps = [run.checkpoint(c).step for c in run.checkpoints]
    assert steps == [0, 6, 12, 18]  # 96 training rows / batch 16 = 6 steps per epoch
    training = run.attrs["training"]
    assert training["status"] == "finished" and "eval mode" in training["measurement"]
    assert [e["epoch"] for e in training["epochs"]] == [1, 2, 3]
    assert run.label_names == LABELS and run.n_examples == N and "source" in run.columns
    assert validate(run.loc.url) == []
    # extract=True: every checkpoint's hidden states come with it, the epoch's dynamics from the same pass
    assert all(run.checkpoint(c).complete for c in run.checkpoints)
    np.testing.assert_array_equal(dynamics.gold_prob[-1], run.checkpoint("epoch-3").array("gold_prob")[...])
    # it learned something, so the dynamics carry signal
    assert training["epochs"][-1]["train_accuracy"] > 0.6


def test_data_map_equals_direct_computation_from_recorded_probabilities(trained):
    run = trained["run"]
    dynamics, labels = run.dynamics(), run.column("label")
    table = run_data_map(run)
    assert table.index.tolist() == list(range(N_TRAIN))  # the training split only
    for i in table.index:
        p = [float(x) for x in dynamics.gold_prob[:, i]]
        row = table.loc[i]
        assert row["confidence"] == pytest.approx(statistics.fmean(p), abs=1e-6)
        assert row["variability"] == pytest.approx(statistics.pstdev(p), abs=1e-6)
        assert row["correctness"] == pytest.approx(np.mean([dynamics.pred[e, i] == labels[i] for e in range(3)]))
        assert row["confidence_score"] == pytest.approx(1 - statistics.fmean(p), abs=1e-6)
        assert row["aum_score"] == pytest.approx(-statistics.fmean(float(x) for x in dynamics.margin[:, i]), abs=1e-6)
        train_aum = -statistics.fmean(float(x) for x in dynamics.train_margin[:, i])
        assert row["train_aum_score"] == pytest.approx(train_aum, abs=1e-6)
    # the default: the two AUMs' percentile ranks averaged, among the training rows
    ranks = table[["train_aum_score", "aum_score"]].rank(pct=True).mean(axis=1)
    np.testing.assert_allclose(table["mislabel_score"], ranks, atol=1e-6)
    assert len(run_data_map(run, split=None)) == N


def test_in_training_dynamics_equal_a_recomputation_from_the_weights_before_each_step(trained):
    """Each batch's p(gold) and margin, recorded from the Trainer's own forward passes (before the update)."""
    run, frame = trained["run"], trained["frame"]
    expect = trained["log"].recompute(EPOCHS, frame["text"].tolist(), run.column("label"), trained["tokenizer"],
                                      len(LABELS))
    dynamics = run.dynamics()
    for key, values in expect.items():
        got = getattr(dynamics, key)
        assert got.shape == (EPOCHS, N)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(values))  # NaN: validation rows, never trained on
        np.testing.assert_allclose(got[:, :N_TRAIN], values[:, :N_TRAIN], atol=1e-5)
    assert np.isnan(dynamics.train_margin[:, N_TRAIN:]).all() and not np.isnan(dynamics.train_margin[:, :N_TRAIN]).any()
    assert [e["train_rows_seen_in_training"] for e in run.attrs["training"]["epochs"]] == [N_TRAIN] * EPOCHS
    # the training pass is not the end-of-epoch measurement: the model changes during the epoch
    assert not np.allclose(dynamics.train_gold_prob[0, :N_TRAIN], dynamics.gold_prob[0, :N_TRAIN], atol=1e-3)


def test_checkpoints_are_safetensors_and_reload_to_identical_logits(trained):
    run, model, tokenizer = trained["run"], trained["model"], trained["tokenizer"]
    for name in run.checkpoints:
        files = {p.name for p in Path(run.checkpoint(name).weights_path).iterdir()}
        assert "model.safetensors" in files and "config.json" in files
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    inputs = tokenizer(trained["frame"]["text"].tolist()[:32], truncation=True, max_length=MAX_LENGTH,
                       padding=True, return_tensors="pt")
    final, _ = load_checkpoint(run.checkpoint("epoch-3").weights_path)
    with torch.no_grad():
        assert torch.equal(final(**inputs).logits, model(**inputs).logits)
    start, _ = load_checkpoint(run.checkpoint("epoch-0").weights_path)
    for key, value in start.state_dict().items():  # checkpoint 0 is the model before any step
        assert torch.equal(value, trained["initial"][key]), key


def test_recorded_dynamics_match_an_unbatched_forward_of_each_checkpoint(trained):
    """Length-bucketed, padded batches must put every example's numbers in its own row."""
    run, tokenizer = trained["run"], trained["tokenizer"]
    dynamics, labels, texts = run.dynamics(), run.column("label"), trained["frame"]["text"].tolist()
    for epoch in (1, 3):
        model, _ = load_checkpoint(run.checkpoint(f"epoch-{epoch}").weights_path)
        for i in range(0, N, 7):
            with torch.no_grad():
                logits = model(**tokenizer(texts[i], truncation=True, max_length=MAX_LENGTH,
                                           return_tensors="pt")).logits[0].double()
            prob = torch.softmax(logits, 0)
            assert dynamics.gold_prob[epoch - 1, i] == pytest.approx(float(prob[labels[i]]), abs=1e-5)
            assert dynamics.pred[epoch - 1, i] == int(prob.argmax())


def sentiment(n: int = 64, seed: int = 1) -> pd.DataFrame:
    """String labels whose sorted order (negative, positive) is not the model's id order."""
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.5
    words = [TOPICS["sport"] if p else TOPICS["business"] for p in positive]
    return pd.DataFrame({"text": [" ".join(rng.choice(w, 6)) for w in words],
                         "label": np.where(positive, "positive", "negative")})


def test_string_labels_mean_the_model_labels_with_an_unsorted_id2label(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    model = tiny_model(2, id2label={0: "positive", 1: "negative"}, label2id={"positive": 0, "negative": 1})
    frame = sentiment()
    # what a user trains on: the names through the model's label2id
    train = frame.assign(label=frame["label"].map(model.config.label2id), split="train")
    callback = T3VisCallback(tmp_path / "run", examples=frame, max_length=MAX_LENGTH, bf16=False)
    trainer_for(model, tokenizer, train, tmp_path, [callback], epochs=2).train()
    run = Run(tmp_path / "run")
    assert run.label_names == ["positive", "negative"]  # the model's order, not sorted
    np.testing.assert_array_equal(run.column("label"), train["label"].to_numpy())  # 'positive' is stored as 0
    assert [run.label_names[i] for i in run.column("label")] == frame["label"].tolist()
    # measured against the class the model learned for each example: it fits them
    assert run.dynamics().gold_prob[-1].mean() > 0.6 and run.dynamics().train_gold_prob[-1].mean() > 0.6


def test_labels_the_model_does_not_know_stop_training_before_it_starts(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    model = tiny_model(2, id2label={0: "pos", 1: "neg"}, label2id={"pos": 0, "neg": 1})
    frame = sentiment()
    callback = T3VisCallback(tmp_path / "run", examples=frame, max_length=MAX_LENGTH, bf16=False)
    train = frame.assign(label=(frame["label"] == "negative").astype(int), split="train")
    with pytest.raises(DatasetError) as info:
        trainer_for(model, tokenizer, train, tmp_path, [callback], epochs=1).train()
    message = str(info.value)
    assert "{0: 'negative', 1: 'positive'}" in message and "{0: 'pos', 1: 'neg'}" in message  # both mappings
    assert "label_names=" in message
    assert not (tmp_path / "run").exists()  # nothing written
    # integer ids named in another order than the model's are refused too
    with pytest.raises(DatasetError, match="class id 0 is 'neg' in the data but 'pos' in the model"):
        DynamicsRecorder(tmp_path / "run2", train, label_names=["neg", "pos"]).start(model, tokenizer)


def test_a_model_without_class_names_gets_sorted_ids_with_a_warning(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    recorder = DynamicsRecorder(tmp_path / "run", sentiment(), max_length=MAX_LENGTH, bf16=False)
    with pytest.warns(UserWarning, match=r"sorted order \{0: 'negative', 1: 'positive'\}.*label_names="):
        recorder.start(tiny_model(2), tokenizer)
    assert Run(tmp_path / "run").label_names == ["negative", "positive"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # names given by the user: nothing to warn about
        DynamicsRecorder(tmp_path / "run2", sentiment(), label_names=["positive", "negative"], max_length=MAX_LENGTH,
                         bf16=False).start(tiny_model(2), tokenizer)
    assert Run(tmp_path / "run2").label_names == ["positive", "negative"]


@pytest.mark.parametrize("bf16", [False, True])
def test_recorded_dynamics_equal_the_pipeline_extraction_of_the_same_weights(tmp_path, bf16):
    """One batching and precision path: the recorder's p(gold) for epoch k is what `t3vis extract` computes for
    checkpoint epoch-k (the extraction task's own calls: cached_checkpoint + extract)."""
    from t3vis.analysis.extraction import extract
    from t3vis.models.inference import cached_checkpoint

    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    model = tiny_model(3, attn_implementation="sdpa")
    frame = examples(n=300)
    recorder = DynamicsRecorder(tmp_path / "run", frame, label_names=LABELS, max_length=MAX_LENGTH, bf16=bf16)
    recorder.start(model, tokenizer)
    recorder.on_epoch_end(model, epoch=1, step=0)
    run = Run(tmp_path / "run")
    loaded = cached_checkpoint(run.checkpoint("epoch-1").weights_path, dtype="bfloat16" if bf16 else "float32",
                               device="cpu")
    out = extract(loaded.model, loaded.tokenizer, frame["text"].tolist(), run.column("label"), max_length=MAX_LENGTH)
    dynamics = run.dynamics()
    np.testing.assert_allclose(dynamics.gold_prob[0], out["gold_prob"], atol=1e-6)
    np.testing.assert_allclose(dynamics.loss[0], out["loss"], atol=1e-5)
    np.testing.assert_array_equal(dynamics.pred[0], out["pred"])
    assert next(model.parameters()).dtype == torch.float32  # the training weights were not cast


def test_existing_run_is_not_overwritten_without_overwrite(trained):
    run = trained["run"]
    before = run.attrs["created"]
    with pytest.raises(RunExistsError, match="overwrite"):
        T3VisCallback(run.loc.url, examples=trained["frame"], label_names=LABELS)
    assert Run(run.loc.url).attrs["created"] == before


class PoisonInputs(TrainerCallback):
    """Turns one token embedding into inf at ``at_step``: the next loss is NaN, as in a real divergence."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.at_step:
            with torch.no_grad():
                model.bert.embeddings.word_embeddings.weight.fill_(float("inf"))


def test_nan_loss_stops_training_and_keeps_earlier_checkpoints(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    frame = examples()
    callback = T3VisCallback(tmp_path / "run", examples=frame, label_names=LABELS, max_length=MAX_LENGTH, bf16=False)
    trainer = trainer_for(tiny_model(3), tokenizer, frame, tmp_path, [PoisonInputs(at_step=8), callback])
    with pytest.raises(TrainingError, match=r"step 9: the model's weights are NaN/inf.*epoch-0', 'epoch-1'"):
        trainer.train()
    run = Run(tmp_path / "run")
    assert run.checkpoints == ["epoch-0", "epoch-1"] and run.epochs() == [1]
    assert run.attrs["training"]["status"] == "failed" and "NaN" in run.attrs["training"]["error"]
    model, _ = load_checkpoint(run.checkpoint("epoch-1").weights_path)  # the kept checkpoint is intact
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_recorder_refuses_nan_outputs_at_epoch_end(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    model = tiny_model(3)
    recorder = DynamicsRecorder(tmp_path / "run", examples(), label_names=LABELS, max_length=MAX_LENGTH, bf16=False)
    recorder.start(model, tokenizer)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="epoch 1: the model's outputs are NaN/inf"):
        recorder.on_epoch_end(model, epoch=1, step=5)
    assert Run(tmp_path / "run").checkpoints == ["epoch-0"]


# ------------------------------------------------------------------------------------------------ loop and CLI
@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A model directory (safetensors + tokenizer) and a CSV, as a user would give ``t3vis train``."""
    tmp = tmp_path_factory.mktemp("base")
    save_model(tiny_model(3), tiny_tokenizer(tmp / "tokenizer"), tmp / "model")
    frame = examples(n=150)
    frame["label"] = [LABELS[i] for i in frame["label"]]
    frame.drop(columns="split").to_csv(tmp / "data.csv", index=False)
    return tmp


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="t3vis")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_t3vis_train_writes_a_valid_run_with_noise(base_model, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = [str(base_model / "data.csv"), "--model", str(base_model / "model"), "--run", str(run_dir),
            "--epochs", "2", "--noise", "0.1", "--learning-rate", "3e-3", "--max-length", "48", "--no-pipeline"]
    assert cli(["train", *argv]) == 0
    assert "wrote" in capsys.readouterr().out
    run = Run(run_dir)
    assert validate(str(run_dir)) == []
    assert run.epochs() == [1, 2] and run.checkpoints == ["epoch-0", "epoch-1", "epoch-2"]
    frame = run.examples()
    assert (frame["split"] == "validation").sum() == 30 and frame["flipped"].sum() == 12  # 10% of 120 train rows
    assert not frame.loc[frame["split"] == "validation", "flipped"].any()
    assert run.attrs["training"]["config"]["learning_rate"] == 3e-3
    with pytest.raises(RunExistsError):  # a second run over it needs --overwrite
        cli(["train", *argv])
    assert cli(["train", *argv, "--overwrite", "--epochs", "1"]) == 0
    assert Run(run_dir).epochs() == [1]


def test_fine_tune_is_deterministic_for_a_seed_and_reports_progress(base_model, tmp_path):
    from t3vis.data import from_frame

    ds = from_frame(pd.read_csv(base_model / "data.csv"), label_names=LABELS)
    ds = ds.with_frame(ds.frame.assign(split=np.where(np.arange(150) < 120, "train", "validation")))
    stages = []

    def train(name, seed):
        config = TrainConfig(epochs=2, learning_rate=3e-3, max_length=48, seed=seed, bf16=False)
        train_run(tmp_path / name, ds, model_path=base_model / "model", config=config,
                  progress=lambda stage, f: stages.append((stage, f)))
        return Run(tmp_path / name).dynamics()

    first = train("a", 0)
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0 < fractions[len(fractions) // 2] < 1
    assert any("epoch 2/2: training" in s for s, _ in stages)
    again, other = train("b", 0), train("c", 1)
    assert np.array_equal(first.gold_prob, again.gold_prob) and np.array_equal(first.pred, again.pred)
    assert not np.array_equal(first.gold_prob, other.gold_prob)
    assert first.gold_prob[-1, :120].mean() > first.gold_prob[0, :120].mean()  # it learns


def test_train_run_extracts_each_checkpoint_in_the_pass_that_measures_it(base_model, tmp_path):
    """``train_run`` writes every checkpoint's extracted arrays while training: equal to the extraction of the saved
    weights, the epoch's dynamics from the very same pass, and nothing left for the pipelines' extract step."""
    from pipelines.build import PIPELINE_STEPS, extraction_pending, pipeline_fraction
    from pipelines.extract import plan_checkpoint
    from t3vis.analysis.extraction import extract
    from t3vis.data import from_frame
    from t3vis.store import RunWriter, schema

    ds = from_frame(pd.read_csv(base_model / "data.csv"), label_names=LABELS)
    ds = ds.with_frame(ds.frame.assign(split=np.where(np.arange(150) < 120, "train", "validation")))
    path = train_run(tmp_path / "run", ds, model_path=base_model / "model",
                     config=TrainConfig(epochs=2, learning_rate=3e-3, max_length=48, seed=0, bf16=False))
    run, writer = Run(path), RunWriter(str(path))
    assert validate(str(path)) == []
    texts, labels = run.column("text").tolist(), run.column("label")
    for epoch, name in enumerate(run.checkpoints):
        checkpoint = run.checkpoint(name)
        assert checkpoint.complete and checkpoint.attrs["extract"]["in"] == "training"
        assert plan_checkpoint(run, writer, name, schema.CHUNK_ROWS) is None  # the pipelines skip it
        model, tokenizer = load_checkpoint(path / "weights" / name)
        expect = extract(model, tokenizer, texts, labels, max_length=48)
        for array in schema.EXTRACTED_ARRAYS:
            got = checkpoint.array(array)[...]
            if array.startswith("hidden"):  # float16: one rounding step apart at most
                np.testing.assert_allclose(got.astype(np.float32), expect[array].astype(np.float32),
                                           rtol=2e-3, atol=2e-3)
            else:
                np.testing.assert_allclose(got, expect[array], rtol=1e-5, atol=1e-5)
        if epoch:  # the epoch's dynamics are that pass's outputs
            np.testing.assert_array_equal(run.dynamics().gold_prob[epoch - 1], checkpoint.array("gold_prob")[...])
    # the demo's progress bar then leaves extraction out of the pipelines' share
    assert not extraction_pending(path, None)
    rest = {step: share for step, share in PIPELINE_STEPS.items() if step != "extract"}
    assert pipeline_fraction({"extract": 1.0, "importance": 1.0}, rest) == pytest.approx(
        PIPELINE_STEPS["importance"] / sum(rest.values()))


def test_the_loop_records_in_training_dynamics_equal_to_a_recomputation(tmp_path):
    from t3vis.training.demo import fine_tune

    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    frame = examples()
    recorder = DynamicsRecorder(tmp_path / "run", frame, label_names=LABELS, max_length=MAX_LENGTH, bf16=False)
    model = tiny_model(3, **NO_DROPOUT)
    recorder.start(model, tokenizer)
    log = ForwardLog(model)
    fine_tune(model, recorder, TrainConfig(epochs=2, learning_rate=3e-3, max_length=MAX_LENGTH, bf16=False))
    run = Run(tmp_path / "run")
    expect = log.recompute(2, frame["text"].tolist(), run.column("label"), tokenizer, 3)
    dynamics = run.dynamics()
    for key, values in expect.items():
        got = getattr(dynamics, key)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(values))
        np.testing.assert_allclose(got[:, :N_TRAIN], values[:, :N_TRAIN], atol=1e-5)
    assert np.isnan(dynamics.train_gold_prob[:, N_TRAIN:]).all()


def test_t3vis_train_keeps_a_saved_classifiers_class_ids(base_model, tmp_path, capsys):
    names = ["tech", "business", "sport"]  # not sorted
    model = tiny_model(3, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    save_model(model, tiny_tokenizer(tmp_path / "tokenizer"), tmp_path / "classifier")
    argv = [str(base_model / "data.csv"), "--model", str(tmp_path / "classifier"), "--epochs", "1",
            "--learning-rate", "3e-3", "--max-length", "48", "--no-pipeline"]
    assert cli(["train", *argv, "--run", str(tmp_path / "run")]) == 0
    run = Run(tmp_path / "run")
    assert run.label_names == names
    csv = pd.read_csv(base_model / "data.csv")
    assert [names[i] for i in run.column("label")] == csv["label"].tolist()
    saved, _ = load_checkpoint(run.checkpoint("epoch-1").weights_path)
    assert saved.config.id2label == dict(enumerate(names))  # the classifier's mapping was kept, not re-sorted
    other = tiny_model(3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    save_model(other, tiny_tokenizer(tmp_path / "tokenizer"), tmp_path / "other")
    with pytest.raises(DatasetError, match=r"do not match .*other/config.json id2label \{0: 'a', 1: 'b', 2: 'c'\}"):
        cli(["train", *argv, "--run", str(tmp_path / "run2"), "--model", str(tmp_path / "other")])
    assert not (tmp_path / "run2").exists()


def test_t3vis_demo_refuses_to_replace_an_existing_run(tmp_path):
    from tests.fixtures import make_tiny_run

    make_tiny_run(tmp_path, name="bbc-news-minilm")
    created = Run(tmp_path / "bbc-news-minilm").attrs["created"]
    with pytest.raises(RunExistsError, match="bbc-news-minilm: already holds a run.*--overwrite"):
        cli(["demo", "--runs-dir", str(tmp_path)])
    assert Run(tmp_path / "bbc-news-minilm").attrs["created"] == created
