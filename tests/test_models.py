"""Models: the architecture registry, head gates (checked against zeroing value weights), loading and saving."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from t3vis.errors import ModelError
from t3vis.models import (
    active_gates,
    default_model_path,
    gates_from_pruned,
    head_gates,
    head_input_modules,
    install_head_gates,
    layer_modules,
    load_checkpoint,
    load_model,
    model_info,
    num_layers_heads,
    remove_head_gates,
    save_model,
    spec_for,
    supported_model_types,
)

torch.set_num_threads(1)

L, H, D = 2, 4, 32
D_HEAD = D // H
TINY = dict(hidden_size=D, num_hidden_layers=L, num_attention_heads=H, intermediate_size=64, vocab_size=100,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.2)


def tiny_model(model_type: str, dtype=torch.float32):
    """A random model with big enough weights that one head visibly moves the logits."""
    torch.manual_seed(0)
    extra = {"num_key_value_heads": H} if model_type in {"llama", "mistral", "qwen2"} else {}
    config = AutoConfig.for_model(model_type, **TINY, **extra)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    return model.to(dtype).eval()


def tiny_batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 100, (3, 7), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, 5:] = 0  # right padding with pad_token_id
    attention_mask[1, 5:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor([0, 1, 0])}


def logits(model, batch, gates=None):
    with torch.no_grad(), head_gates(model, gates):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def zero_value_rows(model, layer: int, head: int) -> None:
    """The independent reference: make head (layer, head) output zero by zeroing its value projection."""
    block = layer_modules(model)[layer]
    rows = slice(head * D_HEAD, (head + 1) * D_HEAD)
    model_type = model.config.model_type
    if model_type == "gpt2":  # Conv1D weight is [in, 3 * D]: query | key | value columns
        value = block.attn.c_attn
        rows = slice(2 * D + rows.start, 2 * D + rows.stop)
        value.weight.data[:, rows] = 0
        value.bias.data[rows] = 0
        return
    value = {"distilbert": lambda: block.attention.v_lin,
             "llama": lambda: block.self_attn.v_proj,
             "mistral": lambda: block.self_attn.v_proj,
             "qwen2": lambda: block.self_attn.v_proj}.get(model_type, lambda: block.attention.self.value)()
    value.weight.data[rows] = 0
    if value.bias is not None:
        value.bias.data[rows] = 0


# --- registry ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", supported_model_types())
def test_registry_paths_resolve_to_the_head_concatenation(model_type):
    model = tiny_model(model_type)
    assert num_layers_heads(model) == (L, H)
    for module in head_input_modules(model):
        weight = module.weight  # Linear: [out, in]; GPT-2 Conv1D: [in, out]
        in_features = weight.shape[0] if model_type == "gpt2" else weight.shape[1]
        assert in_features == H * D_HEAD


def test_registry_rejects_an_unsupported_architecture():
    model = tiny_model("albert")
    with pytest.raises(ModelError, match="'albert'.*bert, camembert"):
        spec_for(model)
    with pytest.raises(ModelError, match="not supported"):
        install_head_gates(model)


# --- gates ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", supported_model_types())
def test_zero_gate_equals_zeroing_the_heads_value_weights(model_type):
    model, batch = tiny_model(model_type), tiny_batch()
    pruned = [(0, 1), (1, 3)]
    full = logits(model, batch)
    gated = logits(model, batch, gates_from_pruned(pruned, L, H))
    for layer, head in pruned:
        zero_value_rows(model, layer, head)
    reference = logits(model, batch)
    assert (gated - full).abs().max() > 1e-3  # the heads matter, so the comparison below means something
    torch.testing.assert_close(gated, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "gpt2"])
def test_all_ones_gates_change_nothing(model_type):
    model, batch = tiny_model(model_type), tiny_batch()
    assert torch.equal(logits(model, batch, torch.ones(L, H)), logits(model, batch))


def loss_with_gates(model, batch, gates):
    with head_gates(model, gates):
        return model(**batch).loss


@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_gate_gradient_matches_central_finite_difference(model_type):
    model, batch = tiny_model(model_type, torch.float64), tiny_batch()
    gates = torch.ones(L, H, dtype=torch.float64, requires_grad=True)
    loss_with_gates(model, batch, gates).backward()
    eps = 1e-6
    for layer, head in [(0, 2), (1, 0)]:
        step = torch.zeros(L, H, dtype=torch.float64)
        step[layer, head] = eps
        with torch.no_grad():
            up = loss_with_gates(model, batch, torch.ones(L, H, dtype=torch.float64) + step)
            down = loss_with_gates(model, batch, torch.ones(L, H, dtype=torch.float64) - step)
        finite_difference = (up - down) / (2 * eps)
        assert abs(finite_difference) > 1e-4
        assert gates.grad[layer, head].item() == pytest.approx(finite_difference.item(), rel=1e-6, abs=1e-9)


def test_bf16_model_with_float32_gates():
    model, batch = tiny_model("bert", torch.bfloat16), tiny_batch()
    gated = logits(model, batch, gates_from_pruned([(1, 2)], L, H))
    zero_value_rows(model, 1, 2)
    assert gated.dtype == torch.bfloat16
    torch.testing.assert_close(gated, logits(model, batch), atol=0, rtol=0)
    gates = torch.ones(L, H, requires_grad=True)
    loss_with_gates(model, batch, gates).backward()
    assert gates.grad.dtype == torch.float32 and torch.isfinite(gates.grad).all() and gates.grad.abs().sum() > 0


def test_threads_sharing_one_model_each_see_their_own_gates():
    model, batch = tiny_model("bert"), tiny_batch()
    configs = [None, gates_from_pruned([(0, 0), (1, 2)], L, H), gates_from_pruned([(1, 1)], L, H),
               torch.zeros(L, H)]
    expected = [logits(model, batch, gates) for gates in configs]
    assert all((expected[0] - other).abs().max() > 1e-3 for other in expected[1:])
    barrier = threading.Barrier(len(configs))

    def session(index: int) -> int:
        wrong = 0
        for _ in range(25):
            with torch.no_grad(), head_gates(model, configs[index]):
                barrier.wait()  # every thread now has its own gates set on the shared model at once
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            wrong += not torch.equal(out, expected[index])
        return wrong

    with ThreadPoolExecutor(len(configs)) as pool:
        assert list(pool.map(session, range(len(configs)))) == [0] * len(configs)
    assert active_gates(model) is None


def test_asyncio_tasks_each_see_their_own_gates():
    model, batch = tiny_model("bert"), tiny_batch()
    pruned = gates_from_pruned([(0, 3)], L, H)
    expected_full, expected_pruned = logits(model, batch), logits(model, batch, pruned)

    async def session(gates):
        with head_gates(model, gates):
            await asyncio.sleep(0.01)  # the other task runs while these gates are set
            return logits(model, batch, active_gates(model))

    async def both():
        return await asyncio.gather(session(None), session(pruned))

    full, gated = asyncio.run(both())
    assert torch.equal(full, expected_full) and torch.equal(gated, expected_pruned)


def test_gates_are_per_model_nested_and_removable():
    first, second, batch = tiny_model("bert"), tiny_model("bert"), tiny_batch()
    pruned = gates_from_pruned([(0, 1)], L, H)
    assert install_head_gates(first) == install_head_gates(first)  # idempotent
    with head_gates(first, pruned):
        torch.testing.assert_close(logits(second, batch), logits(first, batch, None), atol=0, rtol=0)
        with head_gates(first, None):  # an inner block can switch gating off
            assert active_gates(first) is None
        assert active_gates(first) is pruned
    remove_head_gates(first)
    assert not any(module._forward_pre_hooks for module in head_input_modules(first))


def test_bad_gates_raise_model_error():
    model = tiny_model("bert")
    with pytest.raises(ModelError, match=r"expected shape .*\(2, 4\), got \(4, 2\)"):
        with head_gates(model, torch.ones(H, L)):
            pass
    with pytest.raises(ModelError, match=r"\(2, 0\) is out of range.*2 layers x 4 heads"):
        gates_from_pruned([(2, 0)], L, H)


# --- loading and saving -----------------------------------------------------------------------------------------

LABELS = ["business", "entertainment", "politics", "sport", "tech"]


@pytest.fixture(scope="module")
def minilm():
    return load_model(default_model_path(), label_names=LABELS)


def test_load_bundled_minilm(minilm):
    model, tokenizer = minilm
    assert not model.training
    assert model.config.id2label[3] == "sport" and model.config.label2id["tech"] == 4
    info = model_info(model, tokenizer)
    assert info == {"name_or_path": default_model_path(), "model_type": "bert", "num_layers": 6, "num_heads": 12,
                    "hidden_size": 384, "num_labels": 5, "max_length": 512}
    assert json.loads(json.dumps(info)) == info


def test_save_and_load_checkpoint_round_trip(minilm, tmp_path):
    model, tokenizer = minilm
    batch = tokenizer(["Shares rose sharply today.", "The match ended in a draw."], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
    target = tmp_path / "weights" / "epoch_1"
    save_model(model, tokenizer, target)
    save_model(model, tokenizer, target)  # replacing an existing checkpoint
    assert sorted(os.listdir(target.parent)) == ["epoch_1"]
    assert (target / "model.safetensors").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete checkpoint loads silently
        loaded, loaded_tokenizer = load_checkpoint(target)
    with torch.no_grad():
        after = loaded(**loaded_tokenizer(["Shares rose sharply today.", "The match ended in a draw."],
                                          padding=True, return_tensors="pt")).logits
    assert torch.equal(before, after)
    assert loaded.config.id2label == model.config.id2label

    # a replacing save that died between its two renames: the old copy was set aside, the new one not yet in place
    os.replace(target, str(target) + ".old")
    (target.parent / "epoch_1.tmp").mkdir()
    (target.parent / "epoch_1.tmp" / "config.json").write_text("{")  # half-written
    recovered, _ = load_checkpoint(target)  # the set-aside complete copy is found
    assert torch.equal(recovered.classifier.weight, model.classifier.weight)
    save_model(model, tokenizer, target)  # the next save puts it back first, then replaces it as usual
    assert sorted(os.listdir(target.parent)) == ["epoch_1"]
    assert load_checkpoint(target)[0].config.id2label == model.config.id2label


def test_load_checkpoint_requires_the_classification_head():
    with pytest.raises(ModelError, match="incomplete: missing weights classifier"):
        load_checkpoint(default_model_path())


def test_missing_directory_or_config_raises(tmp_path):
    with pytest.raises(ModelError, match=f"{tmp_path / 'nope'} does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        load_model(tmp_path / "empty")


def test_model_type_without_sequence_classification_raises(tmp_path):
    AutoConfig.for_model("vit", hidden_size=32, num_hidden_layers=1, num_attention_heads=4).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="'vit' has no sequence classifier"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match="'vit' has no token classifier"):
        load_model(tmp_path, head="token")


def test_a_saved_head_loads_as_itself_and_not_as_the_other(tmp_path):
    """A token classifier's checkpoint reloads as a token classifier; asking for a sequence classifier says what
    it is (never a silently re-initialised head)."""
    from transformers import BertConfig, BertForTokenClassification

    from tests.fixtures import TINY_CONFIG, tiny_tokenizer, vocabulary

    model = BertForTokenClassification(BertConfig(vocab_size=len(vocabulary()), num_labels=3, **TINY_CONFIG))
    save_model(model, tiny_tokenizer(tmp_path / "tok"), tmp_path / "tagger")
    loaded, _ = load_checkpoint(tmp_path / "tagger")
    assert type(loaded).__name__ == "BertForTokenClassification"
    with pytest.raises(ModelError, match="is a token classifier .* but a sequence classifier was asked for"):
        load_model(tmp_path / "tagger")


def test_pickled_weights_are_refused(tmp_path):
    model = tiny_model("bert")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(default_model_path(), name), tmp_path)
    with pytest.raises(ModelError, match="safetensors"):
        load_model(tmp_path)


def test_label_count_mismatch_with_saved_head_raises(minilm, tmp_path):
    model, tokenizer = minilm
    save_model(model, tokenizer, tmp_path / "ckpt")
    with pytest.raises(ModelError, match="classifier for 5 labels .*business.* but 2 were asked for"):
        load_model(tmp_path / "ckpt", label_names=["a", "b"])
    loaded, _ = load_model(tmp_path / "ckpt", label_names=[name.upper() for name in LABELS])  # same count: renamed
    assert loaded.config.id2label[0] == "BUSINESS"


def test_missing_body_weights_warn_and_make_a_checkpoint_incomplete(tmp_path):
    from safetensors.torch import save_file

    model = tiny_model("bert")
    model.config.save_pretrained(tmp_path)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()
             if name != "bert.encoder.layer.1.output.dense.weight"}
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(default_model_path(), name), tmp_path)
    with pytest.warns(UserWarning, match="1 weights of the model body .*layer.1.output.dense.weight"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match="incomplete: missing weights bert.encoder.layer.1.output.dense.weight"):
        load_checkpoint(tmp_path)
