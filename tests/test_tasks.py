"""The task seam: every task the store knows is implemented, runs say their task, and per-unit outputs are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t3vis.errors import StoreError, T3VisError
from t3vis.store import Run, RunWriter, schema, validate
from t3vis.store.synth import synth_run
from t3vis.tasks import DEFAULT_TASK, TASKS, get_task, task_of, unit_outputs


def test_every_stored_task_is_implemented():
    assert set(TASKS) == set(schema.TASKS) and DEFAULT_TASK == schema.DEFAULT_TASK
    assert get_task(None) is TASKS[DEFAULT_TASK] and get_task(DEFAULT_TASK).unit == "example"
    with pytest.raises(T3VisError, match="unknown task 'ner'.*sequence_classification"):
        get_task("ner")


def test_unit_outputs_equal_torch():
    """Probabilities, prediction, gold probability, loss and margin against torch's softmax and cross-entropy."""
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(300, 7)) * 4).astype(np.float32)
    labels = rng.integers(0, 7, 300)
    out = unit_outputs(logits, labels)
    t = torch.as_tensor(logits, dtype=torch.float64)
    probs = t.softmax(-1).numpy()
    others = probs.copy()
    others[np.arange(300), labels] = -1
    np.testing.assert_allclose(out["probs"], probs, rtol=1e-6)
    np.testing.assert_array_equal(out["pred"], logits.argmax(1))
    np.testing.assert_allclose(out["gold_prob"], probs[np.arange(300), labels], rtol=1e-6)
    np.testing.assert_allclose(out["loss"], F.cross_entropy(t, torch.as_tensor(labels), reduction="none").numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(out["margin"], probs[np.arange(300), labels] - others.max(1), atol=1e-6)
    assert set(unit_outputs(logits, None)) == {"probs", "pred"}


def test_a_run_says_its_task(tmp_path):
    run = Run(synth_run(tmp_path / "run", 64, checkpoints=1, num_layers=1, num_heads=2).loc.url)
    assert run.attrs["task"] == DEFAULT_TASK and task_of(run) is TASKS[DEFAULT_TASK]
    assert not validate(run.loc.url)


def test_runs_without_a_task_are_classification_and_unknown_tasks_are_refused(tmp_path):
    writer = synth_run(tmp_path / "run", 64, checkpoints=1, num_layers=1, num_heads=2)
    path = writer.loc.url
    attrs = dict(writer.attrs)
    del attrs["task"]
    writer.root.attrs.put(attrs)  # a run written before tasks existed
    assert Run(str(path)).task == DEFAULT_TASK and not validate(str(path))

    writer.update_attrs(task="summarisation")
    assert any("task 'summarisation'" in str(p) for p in validate(str(path)))
    with pytest.raises(T3VisError, match="unknown task 'summarisation'"):
        task_of(Run(str(path)))
    with pytest.raises(StoreError, match="task 'summarisation': expected one of"):
        RunWriter.create(tmp_path / "other", examples=Run(str(path)).examples(slice(0, 4)),
                         label_names=Run(str(path)).label_names, model=Run(str(path)).model, dataset={},
                         task="summarisation")
