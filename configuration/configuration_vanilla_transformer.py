"""Configuration of the encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

The defaults are the paper's base model (Table 3, row "base"). Field names follow BART / Marian so that every tool of
the `transformers` ecosystem finds what it looks for (`d_model`, `encoder_layers`, `hidden_size` through
`attribute_map`, ...). Every invalid value is refused here, at construction, with a `ValueError` that names the field
and the fix, so that a bad value never reaches the model or a saved `config.json`.
"""

from huggingface_hub.dataclasses import strict
from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig

# The paper's two, then the sinusoids of the pretrained families that load into this model (docs/concepts.md)
POSITION_EMBEDDING_TYPES = ("sinusoidal", "learned", "sinusoidal_marian", "sinusoidal_fairseq")


@strict
class VanillaTransformerConfig(PreTrainedConfig):
    r"""
    Args:
        vocab_size: Size of the (shared) source vocabulary. The paper's base model uses a joint BPE vocabulary of
            about 37000 tokens.
        decoder_vocab_size: Size of the target vocabulary when source and target embeddings are separate
            (`share_encoder_decoder_embeddings=False`); defaults to `vocab_size`.
        d_model: Width of every layer's input and output, d_model in the paper.
        encoder_layers / decoder_layers: Number of layers N in each stack.
        encoder_attention_heads / decoder_attention_heads: Number of heads h; each head has d_k = d_v = d_model / h.
        encoder_ffn_dim / decoder_ffn_dim: Inner width d_ff of the position-wise feed-forward networks.
        activation_function: Non-linearity of the feed-forward networks ("relu" in the paper).
        dropout: P_drop, applied to each sub-layer's output and to the sums of embeddings and positions.
        attention_dropout: Dropout on the attention weights (0 in the paper, used by many later recipes).
        activation_dropout: Dropout after the feed-forward activation (0 in the paper).
        max_position_embeddings: Longest sequence the model accepts.
        position_embedding_type: "sinusoidal" (the paper's fixed encoding) or "learned" (the paper's variant,
            Table 3 row E); for pretrained translators, "sinusoidal_marian" (opus-mt: the sines in the first half of
            d_model, the cosines in the second) or "sinusoidal_fairseq" (M2M100, NLLB, FSMT: tensor2tensor's
            frequencies in that layout, positions counted from `pad_token_id` + 1).
        scale_embedding: Multiply token embeddings by sqrt(d_model) (section 3.4).
        normalize_before: `False` is the paper's post-LN, LayerNorm(x + Sublayer(x)); `True` is pre-LN,
            x + Sublayer(LayerNorm(x)), which trains more stably in deep stacks.
        add_final_layer_norm: LayerNorm after the last layer of each stack. Needed by pre-LN (the residual stream is
            never normalized otherwise) and present in `torch.nn.Transformer` either way. Defaults to
            `normalize_before`.
        layer_norm_eps: Epsilon of every LayerNorm.
        share_encoder_decoder_embeddings: One embedding matrix for source and target tokens (a joint vocabulary).
        tie_word_embeddings: The pre-softmax projection reuses the target embedding matrix (section 3.4). With
            shared source/target embeddings this is the paper's three-way tying; `False` gives the pre-softmax
            projection its own matrix and leaves the source/target sharing as it is (as in Marian and BART).
        lm_head_bias: Give the pre-softmax projection a bias (as `nn.Linear` in the PyTorch tutorial does, and
            Marian's `final_logits_bias`).
        zero_pad_embedding: The pad token's embedding row is zero and stays zero in training, as in Marian, M2M100
            and fairseq (`nn.Embedding`'s `padding_idx`); Marian's decoder starts from its pad token.
        label_smoothing: epsilon_ls of the training loss (0.1 in the paper, section 5.4).
        init_std: Standard deviation of the token embeddings at initialization; defaults to d_model ** -0.5, so that
            embeddings scaled by sqrt(d_model) start with unit variance.
    """

    model_type = "vanilla_transformer"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    vocab_size: int = 37000
    decoder_vocab_size: int | None = None
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    activation_function: str = "relu"
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.0
    activation_dropout: float | int = 0.0
    max_position_embeddings: int = 1024
    position_embedding_type: str = "sinusoidal"
    scale_embedding: bool = True
    normalize_before: bool = False
    add_final_layer_norm: bool | None = None
    layer_norm_eps: float = 1e-5
    share_encoder_decoder_embeddings: bool = True
    tie_word_embeddings: bool = True
    lm_head_bias: bool = False
    zero_pad_embedding: bool = False
    label_smoothing: float | int = 0.0
    init_std: float | None = None
    use_cache: bool = True
    is_encoder_decoder: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    decoder_start_token_id: int | None = 1

    def __post_init__(self, **kwargs):
        if self.decoder_vocab_size is None:
            self.decoder_vocab_size = self.vocab_size
        if self.add_final_layer_norm is None:
            self.add_final_layer_norm = self.normalize_before
        super().__post_init__(**kwargs)
        self.check()

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        # One shared vocabulary has one size: a `vocab_size` set on a built config (by hand, or by a model's
        # `resize_token_embeddings`) is the target side's too, so that `decoder_vocab_size` never goes stale
        if name == "vocab_size" and getattr(self, "share_encoder_decoder_embeddings", False):
            super().__setattr__("decoder_vocab_size", value)

    def check(self):
        """Refuses invalid values and combinations with a ValueError naming the fields and the fix. Run when the
        config is built, and again by the models when they are built and saved: a field set afterwards is checked
        before any weights are made or written."""
        for name in (
            "vocab_size",
            "decoder_vocab_size",
            "d_model",
            "encoder_layers",
            "decoder_layers",
            "encoder_attention_heads",
            "decoder_attention_heads",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name) != 0:
                raise ValueError(
                    f"`d_model` ({self.d_model}) must be divisible by `{name}` ({getattr(self, name)}): each head "
                    f"gets d_model / heads dimensions. Choose a head count that divides {self.d_model} "
                    f"(e.g. {_divisor_near(self.d_model, getattr(self, name))})."
                )
        for name in ("dropout", "attention_dropout", "activation_dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        if self.activation_function not in ACT2FN:
            raise ValueError(
                f"Unknown `activation_function` {self.activation_function!r}; use one of {sorted(ACT2FN)} "
                '("relu" is the paper\'s).'
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"Unknown `position_embedding_type` {self.position_embedding_type!r}; use one of "
                f"{list(POSITION_EMBEDDING_TYPES)}."
            )
        if self.position_embedding_type.startswith("sinusoidal") and self.d_model % 2 != 0:
            raise ValueError(
                f"The sinusoidal encoding pairs a sine and a cosine per frequency, so `d_model` must be even (got "
                f"{self.d_model}); use an even `d_model` or position_embedding_type='learned'."
            )
        if self.position_embedding_type == "sinusoidal_fairseq" and self.d_model < 4:
            raise ValueError(
                f"fairseq's sinusoids space d_model / 2 - 1 frequencies, so `d_model` must be at least 4 (got "
                f"{self.d_model})."
            )
        if self.layer_norm_eps <= 0:
            raise ValueError(f"`layer_norm_eps` must be positive, got {self.layer_norm_eps}.")
        if self.init_std is not None and self.init_std <= 0:
            raise ValueError(f"`init_std` must be positive or None (for d_model ** -0.5), got {self.init_std}.")
        if self.share_encoder_decoder_embeddings and self.decoder_vocab_size != self.vocab_size:
            raise ValueError(
                f"Shared source/target embeddings need one vocabulary, but `decoder_vocab_size` "
                f"({self.decoder_vocab_size}) != `vocab_size` ({self.vocab_size}). Set "
                "share_encoder_decoder_embeddings=False for separate vocabularies, or make the sizes equal."
            )
        source_ids = {"pad_token_id": self.pad_token_id}
        target_ids = {
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id,
        }
        for ids, size, size_name in (
            (source_ids, self.vocab_size, "vocab_size"),
            (target_ids, self.decoder_vocab_size, "decoder_vocab_size"),
        ):
            for name, token_id in ids.items():
                if token_id is not None and not 0 <= token_id < size:
                    raise ValueError(
                        f"`{name}` ({token_id}) is outside the vocabulary: it must be in [0, {size}) since "
                        f"`{size_name}` is {size}. Use the id your tokenizer gives this token, or enlarge the vocabulary."
                    )
        if self.decoder_start_token_id is None:
            raise ValueError(
                "`decoder_start_token_id` must be set: the decoder's first input and the right-shift of `labels` use "
                "it. Set it to the tokenizer's bos (or pad) token id."
            )
        if self.pad_token_id is None:
            raise ValueError(
                "`pad_token_id` must be set: batches of different lengths are padded with it, and ignored labels "
                "(-100) become it in the decoder input. Set it to the tokenizer's pad token id."
            )


def _divisor_near(number: int, target: int) -> int:
    return min((d for d in range(1, number + 1) if number % d == 0), key=lambda d: abs(d - target))


__all__ = ["VanillaTransformerConfig"]
