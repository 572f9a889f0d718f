"""Our model against an independent implementation: `torch.nn.Transformer` wrapped as in the official PyTorch
translation tutorial, with the same weights copied over by `from_torch_transformer`."""

import pytest
import torch
from torch import nn
from vanilla_transformer import from_torch_transformer
from vanilla_transformer.analysis.pytorch_tutorial import TutorialSeq2SeqTransformer

from .conftest import padded_batch

# The tutorial's special ids
PAD, BOS, EOS = 1, 2, 3
D_MODEL, SRC_VOCAB, TGT_VOCAB = 32, 37, 41


def tutorial_model(norm_first, batch_first, activation="relu", shared=False):
    return TutorialSeq2SeqTransformer(
        TGT_VOCAB if shared else SRC_VOCAB,
        TGT_VOCAB,
        d_model=D_MODEL,
        nhead=4,
        num_encoder_layers=2,
        num_decoder_layers=3,
        dim_feedforward=48,
        activation=activation,
        norm_first=norm_first,
        batch_first=batch_first,
        shared_embeddings=shared,
        pad_token_id=PAD,
    ).eval()


def converted(reference, attn_implementation):
    model = from_torch_transformer(
        reference.transformer, reference.src_tok_emb, reference.tgt_tok_emb, reference.generator
    )
    model.set_attn_implementation(attn_implementation)
    return model.eval()


def assert_same_logits(ours, expected, tgt_mask):
    """Equal up to float32 rounding, which grows with the logits' size: the bound is relative to the largest logit,
    so that one bound serves CPUs whose matmul kernels round differently. Rounding reaches 6e-7 of it (gelu with shared
    embeddings, on a CPU without AVX-512); a conversion that forgets the sqrt(d_model) scale is off by half of it.
    Padded query positions carry no meaning in either model."""
    real = tgt_mask.bool()
    difference = (ours[real] - expected[real]).abs().max().item()
    scale = expected[real].abs().max().item()
    assert difference <= 5e-6 * scale, (difference, scale)


def batch():
    src, src_mask = padded_batch([9, 6, 3, 9], vocab_size=SRC_VOCAB, seed=1)
    src = src.masked_fill(src_mask == 0, PAD)
    tgt, tgt_mask = padded_batch([7, 7, 2, 5], vocab_size=TGT_VOCAB, seed=2)
    tgt[:, 0] = BOS
    tgt = tgt.masked_fill(tgt_mask == 0, PAD)
    return src, src_mask, tgt, tgt_mask


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_logits_equal_nn_transformer(norm_first, batch_first, attn_implementation):
    torch.manual_seed(0)
    reference = tutorial_model(norm_first, batch_first)
    model = converted(reference, attn_implementation)
    assert model.config.normalize_before is norm_first and model.config.add_final_layer_norm
    src, src_mask, tgt, tgt_mask = batch()
    with torch.no_grad():
        expected = reference(src, tgt)
        ours = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)
    assert_same_logits(ours.logits, expected, tgt_mask)


def test_shared_embeddings_and_gelu_convert_and_match():
    torch.manual_seed(0)
    reference = tutorial_model(norm_first=False, batch_first=True, activation="gelu", shared=True)
    reference.generator.weight = reference.tgt_tok_emb.embedding.weight  # three-way tying
    model = converted(reference, "sdpa")
    assert model.config.share_encoder_decoder_embeddings and model.config.tie_word_embeddings
    assert model.config.activation_function == "gelu"
    src, src_mask, tgt, tgt_mask = batch()
    src = src % TGT_VOCAB
    src = src.masked_fill(src_mask == 0, PAD)
    with torch.no_grad():
        expected = reference(src, tgt)
        ours = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)
    assert_same_logits(ours.logits, expected, tgt_mask)


def test_converted_model_translates_like_the_tutorial_greedy_decode():
    """The tutorial's `greedy_decode` loop (no cache) and our `generate()` (cache) pick the same tokens."""
    torch.manual_seed(0)
    reference = tutorial_model(norm_first=False, batch_first=True)
    model = converted(reference, "sdpa")
    src = torch.tensor([[5, 9, 11, 4, 20, 7]])
    ys = torch.tensor([[BOS]])
    with torch.no_grad():
        for _ in range(8):
            next_token = reference(src, ys)[:, -1].argmax(-1, keepdim=True)
            ys = torch.cat([ys, next_token], dim=1)
        ours = model.generate(src, max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert ours.tolist() == ys.tolist()


def test_unsupported_settings_are_refused_by_name():
    torch.manual_seed(0)
    reference = tutorial_model(norm_first=False, batch_first=True, activation=nn.Tanh())
    with pytest.raises(ValueError, match="custom activation"):
        from_torch_transformer(reference.transformer, reference.src_tok_emb, reference.tgt_tok_emb, reference.generator)

    no_bias = nn.Transformer(d_model=D_MODEL, nhead=4, num_encoder_layers=1, num_decoder_layers=1, bias=False)
    with pytest.raises(ValueError, match="bias=False"):
        from_torch_transformer(no_bias, reference.src_tok_emb, reference.tgt_tok_emb, reference.generator)

    with pytest.raises(ValueError, match="nn.Embedding"):
        from_torch_transformer(reference.transformer, nn.Linear(2, 2), reference.tgt_tok_emb, reference.generator)
