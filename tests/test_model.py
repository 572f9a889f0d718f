"""Properties of the forward pass that users rely on, on a tiny model with fixed seeds."""

import math

import pytest
import torch
from vanilla_transformer.modeling_vanilla_transformer import sinusoidal_position_table

from .conftest import PAD, padded_batch, tiny_model

IMPLEMENTATIONS = ["eager", "sdpa"]


def forward(model, src, src_mask, tgt, tgt_mask=None, **kwargs):
    with torch.no_grad():
        return model(
            input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask, **kwargs
        )


def test_sinusoidal_table_is_the_papers_formula():
    table = sinusoidal_position_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("normalize_before", [False, True])
def test_eager_and_sdpa_agree(normalize_before):
    eager = tiny_model("eager", normalize_before=normalize_before)
    sdpa = tiny_model("sdpa", normalize_before=normalize_before)
    src, src_mask = padded_batch([7, 3, 5])
    tgt, tgt_mask = padded_batch([6, 6, 2], seed=1)
    a, b = forward(eager, src, src_mask, tgt, tgt_mask), forward(sdpa, src, src_mask, tgt, tgt_mask)
    real = tgt_mask.bool()
    assert (a.logits[real] - b.logits[real]).abs().max() <= 1e-5
    assert (a.encoder_last_hidden_state[src_mask.bool()] - b.encoder_last_hidden_state[src_mask.bool()]).abs().max() <= 1e-5


def test_flex_attention_computes_what_sdpa_does_on_padded_batches():
    # flex_attention is compiled on first use (on a CPU too): about half a minute, hence one forward only
    flex, sdpa = tiny_model("flex_attention"), tiny_model("sdpa")
    src, src_mask = padded_batch([7, 3, 5, 1])
    tgt, tgt_mask = padded_batch([4, 6, 2, 3], seed=3)
    a, b = forward(flex, src, src_mask, tgt, tgt_mask), forward(sdpa, src, src_mask, tgt, tgt_mask)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
def test_decoder_cannot_see_the_future(attn_implementation):
    model = tiny_model(attn_implementation)
    src, src_mask = padded_batch([6, 4])
    tgt, _ = padded_batch([8, 8], seed=1)
    for t in range(7):
        changed = tgt.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 5) % 40
        before, after = forward(model, src, src_mask, tgt).logits, forward(model, src, src_mask, changed).logits
        assert torch.equal(before[:, : t + 1], after[:, : t + 1])
        assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])


@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
def test_appending_padding_changes_no_real_output(attn_implementation):
    model = tiny_model(attn_implementation)
    src, src_mask = padded_batch([6, 4, 2])
    tgt, tgt_mask = padded_batch([5, 3, 5], seed=1)
    more_src, more_src_mask = torch.nn.functional.pad(src, (0, 4), value=PAD), torch.nn.functional.pad(src_mask, (0, 4))
    more_tgt, more_tgt_mask = torch.nn.functional.pad(tgt, (0, 3), value=PAD), torch.nn.functional.pad(tgt_mask, (0, 3))
    short = forward(model, src, src_mask, tgt, tgt_mask).logits
    long = forward(model, more_src, more_src_mask, more_tgt, more_tgt_mask).logits
    real = tgt_mask.bool()
    assert (short[real] - long[:, : tgt.shape[1]][real]).abs().max() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("attn_implementation", IMPLEMENTATIONS)
def test_queries_whose_keys_are_all_padding_stay_finite(attn_implementation, dtype):
    model = tiny_model(attn_implementation)
    with torch.no_grad():  # large scores, where a half-precision score plus the mask's minimum overflows to -inf
        for module in model.modules():
            if hasattr(module, "q_proj"):
                module.q_proj.weight.mul_(30)
    model = model.to(dtype)
    src, src_mask = padded_batch([5, 4])
    src_mask[1] = 0  # a source that is all padding: its encoder queries see no key at all
    tgt, tgt_mask = padded_batch([5, 5], seed=1)
    tgt_mask[0, :2] = 0  # left-padded target: its first queries see no key in self-attention
    out = forward(model, src, src_mask, tgt, tgt_mask, output_attentions=attn_implementation == "eager")
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.encoder_last_hidden_state).all()


def test_attention_weights_are_returned_and_are_distributions():
    model = tiny_model("eager")
    src, src_mask = padded_batch([6, 3])
    tgt, tgt_mask = padded_batch([5, 5], seed=1)
    out = forward(model, src, src_mask, tgt, tgt_mask, output_attentions=True)
    assert len(out.encoder_attentions) == len(out.decoder_attentions) == len(out.cross_attentions) == 2
    assert out.encoder_attentions[0].shape == (2, 4, 6, 6)  # (batch, heads, query, key)
    assert out.decoder_attentions[0].shape == (2, 4, 5, 5)
    assert out.cross_attentions[0].shape == (2, 4, 5, 6)
    for weights in out.encoder_attentions + out.decoder_attentions + out.cross_attentions:
        assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    for weights in out.decoder_attentions:  # the mask of the future: nothing above the diagonal
        assert torch.all(weights.triu(diagonal=1) == 0)
    for weights in out.encoder_attentions + out.cross_attentions:  # padding keys get no weight
        assert torch.all(weights[1, :, :, 3:] == 0)


def test_labels_are_shifted_right_and_minus_100_is_ignored():
    model = tiny_model("sdpa")
    src, src_mask = padded_batch([6, 4])
    labels = torch.tensor([[5, 6, 7, 2], [8, 2, -100, -100]])
    out = model(input_ids=src, attention_mask=src_mask, labels=labels)
    decoder_input_ids = torch.tensor([[1, 5, 6, 7], [1, 8, 2, PAD]])  # decoder_start_token_id = 1
    explicit = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=decoder_input_ids)
    labelled = labels != -100
    assert torch.allclose(out.logits[labelled], explicit.logits[labelled], atol=1e-6)
    assert torch.all(out.logits[~labelled] == 0)  # the target's padding is skipped, not computed
    log_probs = explicit.logits.log_softmax(-1)
    picked = [log_probs[0, t, labels[0, t]] for t in range(4)] + [log_probs[1, t, labels[1, t]] for t in range(2)]
    assert out.loss.item() == pytest.approx(-torch.stack(picked).mean().item(), abs=1e-6)
    # The Trainer passes the token count of the whole accumulated batch: the sum is divided by it instead
    halved = model(input_ids=src, attention_mask=src_mask, labels=labels, num_items_in_batch=12)
    assert halved.loss.item() == pytest.approx(out.loss.item() / 2, rel=1e-6)


def test_a_padded_batch_trains_like_its_pairs_alone():
    # The layers skip padding (source and target): loss and gradients of a padded batch are the sums of those of
    # its pairs, each without any padding
    model = tiny_model("sdpa", dropout=0.0).train()
    src, src_mask = padded_batch([6, 3, 5])
    labels, labels_mask = padded_batch([2, 5, 4], seed=1)
    labels = labels.masked_fill(labels_mask == 0, -100)

    def summed_loss_and_grads(*batch):
        model.zero_grad()
        loss = model(input_ids=batch[0], attention_mask=batch[1], labels=batch[2], num_items_in_batch=1).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = summed_loss_and_grads(src, src_mask, labels)
    alone = [
        summed_loss_and_grads(src[i : i + 1, : n], src_mask[i : i + 1, : n], labels[i : i + 1, : m])
        for i, (n, m) in enumerate(zip(src_mask.sum(1), labels_mask.sum(1)))
    ]
    assert torch.allclose(loss, sum(a[0] for a in alone), atol=1e-5)
    for i, grad in enumerate(grads):
        assert torch.allclose(grad, sum(a[1][i] for a in alone), atol=1e-5)


def test_labels_at_positions_masked_as_padding_are_refused():
    model = tiny_model("sdpa")
    src, src_mask = padded_batch([6, 4])
    labels = torch.tensor([[5, 6, 7, 2], [8, 2, 0, 0]])  # padded with the pad id instead of -100
    with pytest.raises(ValueError, match="`labels` has targets at positions that `decoder_attention_mask` marks as padding"):
        model(input_ids=src, attention_mask=src_mask, labels=labels, decoder_attention_mask=(labels != 0).long())


def test_label_smoothing_mixes_in_the_uniform_distribution():
    model = tiny_model("sdpa", label_smoothing=0.1)
    src, src_mask = padded_batch([6])
    labels = torch.tensor([[5, 6, 2]])
    out = model(input_ids=src, attention_mask=src_mask, labels=labels)
    log_probs = out.logits.log_softmax(-1)[0]
    nll = -log_probs[torch.arange(3), labels[0]].mean()
    uniform = -log_probs.mean(-1).mean()
    assert out.loss.item() == pytest.approx((0.9 * nll + 0.1 * uniform).item(), abs=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    src, src_mask = padded_batch([6, 4])
    labels, _ = padded_batch([5, 5], seed=1)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model("sdpa", dropout=0.0).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        loss = model(input_ids=src, attention_mask=src_mask, labels=labels).loss
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    for plain, checkpointed in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(plain, checkpointed, atol=1e-6)


def test_dropout_is_active_in_training_only():
    model = tiny_model("sdpa", dropout=0.3)
    src, src_mask = padded_batch([6])
    tgt, _ = padded_batch([4], seed=1)
    assert torch.equal(forward(model, src, src_mask, tgt).logits, forward(model, src, src_mask, tgt).logits)
    model.train()
    assert not torch.equal(forward(model, src, src_mask, tgt).logits, forward(model, src, src_mask, tgt).logits)


def test_sequences_longer_than_the_position_table_are_refused_clearly():
    model = tiny_model("sdpa", max_position_embeddings=8)
    src, src_mask = padded_batch([9])
    with pytest.raises(ValueError, match=r"reaches position 9, but the model has max_position_embeddings=8"):
        forward(model, src, src_mask, src[:, :3])


def test_initialization_is_deterministic_under_a_seed():
    first, again, other = tiny_model(seed=3).state_dict(), tiny_model(seed=3).state_dict(), tiny_model(seed=4).state_dict()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["lm_head.weight"], other["lm_head.weight"])
    # Embeddings start with std d_model^-0.5 so that, scaled by sqrt(d_model), they have unit variance
    assert first["lm_head.weight"].std().item() == pytest.approx(32**-0.5, rel=0.1)
