"""Independent reference implementations, used by the tests (numerical equality) and the benchmark (speed).

`TutorialSeq2SeqTransformer` is the model of the official PyTorch translation tutorial ("Language Translation with
nn.Transformer and torchtext"): `torch.nn.Transformer` between scaled token embeddings with the paper's interleaved
sinusoidal positions and an output Linear (`generator`), with a `batch_first` switch. It is not used by our model.
"""

import math

import torch
from torch import nn


class TokenEmbedding(nn.Module):
    """The tutorial's token embedding: nn.Embedding scaled by sqrt(d_model)."""

    def __init__(self, vocab_size: int, emb_size: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.emb_size = emb_size

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens.long()) * math.sqrt(self.emb_size)


def tutorial_positional_encoding(max_len: int, emb_size: int) -> torch.Tensor:
    """The tutorial's PositionalEncoding table: sin at even, cos at odd dimensions."""
    den = torch.exp(-torch.arange(0, emb_size, 2) * math.log(10000) / emb_size)
    pos = torch.arange(0, max_len).reshape(max_len, 1)
    table = torch.zeros((max_len, emb_size))
    table[:, 0::2] = torch.sin(pos * den)
    table[:, 1::2] = torch.cos(pos * den)
    return table


class TutorialSeq2SeqTransformer(nn.Module):
    """The tutorial's Seq2SeqTransformer. Inputs are (batch, seq) token ids padded with `pad_token_id`."""

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        dim_feedforward: int,
        dropout: float = 0.1,
        activation="relu",
        norm_first: bool = False,
        batch_first: bool = True,
        shared_embeddings: bool = False,
        pad_token_id: int = 1,
        max_len: int = 500,
    ):
        super().__init__()
        self.batch_first = batch_first
        self.pad_token_id = pad_token_id
        self.transformer = nn.Transformer(
            d_model=d_model,
            nhead=nhead,
            num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation=activation,
            norm_first=norm_first,
            batch_first=batch_first,
        )
        self.src_tok_emb = TokenEmbedding(src_vocab_size, d_model)
        self.tgt_tok_emb = self.src_tok_emb if shared_embeddings else TokenEmbedding(tgt_vocab_size, d_model)
        self.generator = nn.Linear(d_model, tgt_vocab_size)
        self.register_buffer("positions", tutorial_positional_encoding(max_len, d_model), persistent=False)

    def embed(self, embedding: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        hidden = embedding(tokens) + self.positions[: tokens.shape[1]]  # (batch, seq, d_model)
        return hidden if self.batch_first else hidden.transpose(0, 1)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Logits (batch, tgt_seq, vocab) for every target prefix, as the tutorial's training loop computes them."""
        causal = torch.triu(torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool, device=tgt.device), diagonal=1)
        out = self.transformer(
            self.embed(self.src_tok_emb, src),
            self.embed(self.tgt_tok_emb, tgt),
            tgt_mask=causal,
            src_key_padding_mask=src == self.pad_token_id,
            tgt_key_padding_mask=tgt == self.pad_token_id,
            memory_key_padding_mask=src == self.pad_token_id,
        )
        return self.generator(out if self.batch_first else out.transpose(0, 1))

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, start_token_id: int, max_new_tokens: int) -> torch.Tensor:
        """The tutorial's greedy_decode, batched: re-runs the decoder over the whole prefix at every step (no cache)."""
        memory = self.transformer.encoder(
            self.embed(self.src_tok_emb, src), src_key_padding_mask=src == self.pad_token_id
        )
        ys = torch.full((src.shape[0], 1), start_token_id, dtype=torch.long, device=src.device)
        for _ in range(max_new_tokens):
            causal = torch.triu(torch.ones(ys.shape[1], ys.shape[1], dtype=torch.bool, device=src.device), diagonal=1)
            out = self.transformer.decoder(
                self.embed(self.tgt_tok_emb, ys), memory, tgt_mask=causal, memory_key_padding_mask=src == self.pad_token_id
            )
            last = out[:, -1] if self.batch_first else out[-1]
            ys = torch.cat([ys, self.generator(last).argmax(-1, keepdim=True)], dim=1)
        return ys
