"""Sequence classification: one label per example, read from the classifier's logits ``[n, classes]``."""

from __future__ import annotations

from .base import Task


class SequenceClassification(Task):
    name = "sequence_classification"
    label = "sequence classification"
    unit = "example"
    instance_view = "classes"
    head = "sequence"

    def align_labels(self, dataset, config):
        from ..data.labels import align_labels, model_label_names

        return align_labels(dataset, model_label_names(config))


SEQUENCE_CLASSIFICATION = SequenceClassification()
