"""Our model against an independent implementation: `torch.nn.Transformer` wrapped as in the official PyTorch
translation tutorial, with the same weights copied over by `from_torch_transformer`."""

import math

import pytest
import torch
from torch import nn

from vanilla_transformer import from_torch_transformer

from .conftest import padded_batch

# The tutorial's special ids
PAD, BOS, EOS = 1, 2, 3
D_MODEL, SRC_VOCAB, TGT_VOCAB = 32, 37, 41


class TokenEmbedding(nn.Module):
    """The tutorial's token embedding: nn.Embedding scaled by sqrt(d_model)."""

    def __init__(self, vocab_size, emb_size):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.emb_size = emb_size

    def forward(self, tokens):
        return self.embedding(tokens.long()) * math.sqrt(self.emb_size)


def tutorial_positional_encoding(max_len, emb_size):
    den = torch.exp(-torch.arange(0, emb_size, 2) * math.log(10000) / emb_size)
    pos = torch.arange(0, max_len).reshape(max_len, 1)
    table = torch.zeros((max_len, emb_size))
    table[:, 0::2] = torch.sin(pos * den)
    table[:, 1::2] = torch.cos(pos * den)
    return table


class TutorialSeq2SeqTransformer(nn.Module):
    """The tutorial's Seq2SeqTransformer, with a `batch_first` switch."""

    def __init__(self, norm_first, batch_first, activation="relu", shared=False):
        super().__init__()
        self.batch_first = batch_first
        self.transformer = nn.Transformer(
            d_model=D_MODEL,
            nhead=4,
            num_encoder_layers=2,
            num_decoder_layers=3,
            dim_feedforward=48,
            dropout=0.1,
            activation=activation,
            norm_first=norm_first,
            batch_first=batch_first,
        )
        self.src_tok_emb = TokenEmbedding(SRC_VOCAB if not shared else TGT_VOCAB, D_MODEL)
        self.tgt_tok_emb = self.src_tok_emb if shared else TokenEmbedding(TGT_VOCAB, D_MODEL)
        self.generator = nn.Linear(D_MODEL, TGT_VOCAB)
        self.register_buffer("positions", tutorial_positional_encoding(500, D_MODEL))

    def embed(self, embedding, tokens):
        hidden = embedding(tokens) + self.positions[: tokens.shape[1]]  # (batch, seq, d_model)
        return hidden if self.batch_first else hidden.transpose(0, 1)

    def forward(self, src, tgt):
        """src, tgt: (batch, seq) token ids padded with PAD; returns (batch, tgt_seq, vocab) logits."""
        causal = torch.triu(torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool), diagonal=1)
        out = self.transformer(
            self.embed(self.src_tok_emb, src),
            self.embed(self.tgt_tok_emb, tgt),
            tgt_mask=causal,
            src_key_padding_mask=src == PAD,
            tgt_key_padding_mask=tgt == PAD,
            memory_key_padding_mask=src == PAD,
        )
        return self.generator(out if self.batch_first else out.transpose(0, 1))


def converted(reference, attn_implementation):
    model = from_torch_transformer(
        reference.transformer, reference.src_tok_emb, reference.tgt_tok_emb, reference.generator
    )
    model.set_attn_implementation(attn_implementation)
    return model.eval()


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
    reference = TutorialSeq2SeqTransformer(norm_first, batch_first).eval()
    model = converted(reference, attn_implementation)
    assert model.config.normalize_before is norm_first and model.config.add_final_layer_norm
    src, src_mask, tgt, tgt_mask = batch()
    with torch.no_grad():
        expected = reference(src, tgt)
        ours = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)
    real = tgt_mask.bool()  # padded query positions carry no meaning in either model
    difference = (ours.logits[real] - expected[real]).abs().max().item()
    assert difference <= 1e-5, difference


def test_shared_embeddings_and_gelu_convert_and_match():
    torch.manual_seed(0)
    reference = TutorialSeq2SeqTransformer(norm_first=False, batch_first=True, activation="gelu", shared=True).eval()
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
    real = tgt_mask.bool()
    assert (ours.logits[real] - expected[real]).abs().max().item() <= 1e-5


def test_converted_model_translates_like_the_tutorial_greedy_decode():
    """The tutorial's `greedy_decode` loop (no cache) and our `generate()` (cache) pick the same tokens."""
    torch.manual_seed(0)
    reference = TutorialSeq2SeqTransformer(norm_first=False, batch_first=True).eval()
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
    reference = TutorialSeq2SeqTransformer(norm_first=False, batch_first=True, activation=nn.Tanh())
    with pytest.raises(ValueError, match="custom activation"):
        from_torch_transformer(reference.transformer, reference.src_tok_emb, reference.tgt_tok_emb, reference.generator)

    no_bias = nn.Transformer(d_model=D_MODEL, nhead=4, num_encoder_layers=1, num_decoder_layers=1, bias=False)
    with pytest.raises(ValueError, match="bias=False"):
        from_torch_transformer(no_bias, reference.src_tok_emb, reference.tgt_tok_emb, reference.generator)

    with pytest.raises(ValueError, match="nn.Embedding"):
        from_torch_transformer(reference.transformer, nn.Linear(2, 2), reference.tgt_tok_emb, reference.generator)
