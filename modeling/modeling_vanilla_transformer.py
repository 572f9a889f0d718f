"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017), written out by hand.

Read top-down, the file follows the paper's Figure 1: input embeddings and positional encodings, scaled dot-product
attention, multi-head attention, the position-wise feed-forward network, the residual connection with layer
normalization ("Add & Norm"), the encoder and decoder layers, the two stacks, the encoder-decoder model and the
model with its pre-softmax projection. Section numbers in the docstrings refer to the paper.

Shapes use `batch`, `seq` (source or target length), `heads`, `head_dim` (d_k = d_v = d_model / heads), and
`tokens`: the real tokens of a batch, its padding left out (see `PackedTokens`, at the end of the file: every
position-wise piece runs on the real tokens alone, and attention lays them out on the (batch, seq) grid).
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_vanilla_transformer import VanillaTransformerConfig


def sinusoidal_position_table(num_positions: int, d_model: int) -> torch.Tensor:
    """The fixed positional encoding of section 3.5, one row per position:

    PE(pos, 2i) = sin(pos / 10000^(2i / d_model)),   PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model)).
    """
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)  # (positions, 1)
    # 1 / 10000^(2i / d_model) for i = 0 .. d_model/2 - 1, computed in log space as the PyTorch tutorial does
    inverse_frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(num_positions, d_model)
    table[:, 0::2] = torch.sin(position * inverse_frequency)
    table[:, 1::2] = torch.cos(position * inverse_frequency)
    return table  # (positions, d_model)


def marian_position_table(num_positions: int, d_model: int) -> torch.Tensor:
    """Marian's sinusoids (opus-mt, `position_embedding_type="sinusoidal_marian"`): the paper's frequencies, computed
    in float64 as Marian does, with all the sines in the first half of d_model and the cosines in the second."""
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)  # (positions, 1)
    angle = position / 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (positions, d_model/2)
    return torch.cat([angle.sin(), angle.cos()], dim=1).float()


def fairseq_position_table(num_positions: int, d_model: int, first_position: int) -> torch.Tensor:
    """fairseq's sinusoids (M2M100, NLLB, FSMT, `position_embedding_type="sinusoidal_fairseq"`), tensor2tensor's:
    frequencies 1 / 10000^(i / (d_model/2 - 1)), the sines in the first half and the cosines in the second, and the
    first token at position `first_position` (fairseq numbers the tokens after the padding index)."""
    half = d_model // 2
    frequency = torch.exp(torch.arange(half).float() * -(math.log(10000.0) / (half - 1)))  # (d_model/2,)
    position = torch.arange(first_position, first_position + num_positions).float().unsqueeze(1)  # (positions, 1)
    angle = position * frequency  # (positions, d_model/2)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


class SinusoidalPositionalEncoding(nn.Module):
    """Looks positions up in the precomputed sinusoid table: no parameters, any length up to the table's. The table is
    the paper's, or the variant of a pretrained family that `position_embedding_type` names (docs/concepts.md)."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.position_embedding_type = config.position_embedding_type
        self.first_position = config.pad_token_id + 1  # of fairseq's numbering
        # Not saved with the weights: it is a function of the config, rebuilt on load
        table = self.build_table(config.max_position_embeddings, config.d_model)
        self.register_buffer("table", table, persistent=False)

    def build_table(self, num_positions: int, d_model: int) -> torch.Tensor:
        if self.position_embedding_type == "sinusoidal_marian":
            return marian_position_table(num_positions, d_model)
        if self.position_embedding_type == "sinusoidal_fairseq":
            return fairseq_position_table(num_positions, d_model, self.first_position)
        return sinusoidal_position_table(num_positions, d_model)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table[position_ids]


class InputEmbedding(nn.Module):
    """The input of each stack (sections 3.4, 3.5 and 5.4): Dropout(Embedding(x) * sqrt(d_model) + PE(position)).

    The sqrt(d_model) scale brings embeddings initialized with std d_model^-0.5 (the pre-softmax projection's scale
    when weights are tied) to unit variance, the same order as the positional encodings added to them.
    """

    def __init__(self, config: VanillaTransformerConfig, vocab_size: int):
        super().__init__()
        self.max_positions = config.max_position_embeddings
        # `padding_idx` (zero_pad_embedding): the pad row gets no gradient from the lookup
        padding_idx = config.pad_token_id if config.zero_pad_embedding else None
        self.embed_tokens = nn.Embedding(vocab_size, config.d_model, padding_idx=padding_idx)
        if config.position_embedding_type == "learned":
            self.embed_positions = nn.Embedding(config.max_position_embeddings, config.d_model)
        else:
            self.embed_positions = SinusoidalPositionalEncoding(config)
        self.scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor | None,
        past_length: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds` (the token embeddings, unscaled).")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (batch, seq, d_model)
        seq_length = inputs_embeds.shape[1]
        # A static cache (the one compiled decoding uses) counts its length in a tensor: comparing that here would
        # stall the device and break the compiled graph, so the decoder checks the cache's fixed size instead
        if isinstance(past_length, int):
            self.check_fits(past_length + seq_length)
        position_ids = torch.arange(seq_length, device=inputs_embeds.device) + past_length
        positions = self.embed_positions(position_ids)  # (seq, d_model), broadcast over the batch
        return self.dropout(inputs_embeds * self.scale + positions.to(inputs_embeds.dtype))

    def check_fits(self, length: int):
        if length > self.max_positions:
            raise ValueError(
                f"The sequence reaches position {length}, but the model has max_position_embeddings="
                f"{self.max_positions}. Truncate the inputs (e.g. tokenizer(..., truncation=True, max_length="
                f"{self.max_positions}) or generate(..., max_length=...)), or build the model with a larger "
                "max_position_embeddings."
            )


def eager_scaled_dot_product_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V  (section 3.2.1, equation 1), the explicit "eager" path.

    `attention_mask` is additive: 0 where a query may see a key, the dtype's most negative value where it may not
    (padding, or a future position in the decoder). Returns the output as (batch, seq, heads, head_dim), the layout
    every attention function of `transformers` returns, and the attention weights (batch, heads, q_seq, k_seq).
    """
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling  # (batch, heads, q_seq, k_seq)
    # Softmax in float32: a half-precision sum with the mask could overflow to -inf, and a row of -inf is NaN. In
    # float32 a query whose keys are all masked gets finite, uniform weights instead.
    scores = scores.float()
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # (batch, heads, q_seq, head_dim): the weighted sum of the values
    return output.transpose(1, 2).contiguous(), weights


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)  (3.2.2).

    The h per-head projections are computed as one d_model x d_model matrix each (W^Q) and, for keys and values, one
    fused d_model x 2 d_model matrix ([W^K W^V]), then split into heads. Queries come from `hidden_states`; keys and
    values come from `hidden_states` too (self-attention) or from the encoder output `encoder_hidden_states`
    (cross-attention).
    """

    def __init__(self, config: VanillaTransformerConfig, num_heads: int, is_causal: bool, layer_idx: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = config.d_model // num_heads
        self.scaling = self.head_dim**-0.5  # the 1 / sqrt(d_k) of equation 1
        self.attention_dropout = config.attention_dropout
        # Read by the attention kernels: a causal module may use the kernels' built-in mask of the future
        self.is_causal = is_causal
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(config.d_model, config.d_model)  # W^Q of all heads
        self.kv_proj = nn.Linear(config.d_model, 2 * config.d_model)  # W^K and W^V of all heads
        self.out_proj = nn.Linear(config.d_model, config.d_model)  # W^O

    def split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = states.shape
        return states.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)  # (batch, heads, seq, head_dim)

    def project_keys_values(self, states: torch.Tensor, tokens: "PackedTokens") -> tuple[torch.Tensor, torch.Tensor]:
        """K = X W^K and V = X W^V for the real tokens `states` (tokens, d_model), laid out on the (batch, seq)
        grid."""
        key, value = tokens.unpack(self.kv_proj(states)).chunk(2, dim=-1)  # 2 x (batch, k_seq, d_model)
        return self.split_heads(key), self.split_heads(value)

    def keys_values(
        self,
        hidden_states: torch.Tensor,
        tokens: "PackedTokens",
        encoder_hidden_states: torch.Tensor | None,
        encoder_tokens: "PackedTokens | None",
        cache: EncoderDecoderCache | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values from the queries' own tokens (self-attention) or from the encoder output (cross-attention).
        During step-by-step decoding (`cache`), the encoder's are projected once and reused at every step, and the
        decoder's own grow by the new positions."""
        if encoder_hidden_states is None:
            key, value = self.project_keys_values(hidden_states, tokens)
            return (key, value) if cache is None else cache.self_attention_cache.update(key, value, self.layer_idx)
        if cache is not None and cache.is_updated.get(self.layer_idx):
            layer = cache.cross_attention_cache.layers[self.layer_idx]
            return layer.keys, layer.values
        key, value = self.project_keys_values(encoder_tokens.pack(encoder_hidden_states), encoder_tokens)
        if cache is not None:
            key, value = cache.cross_attention_cache.update(key, value, self.layer_idx)
            cache.is_updated[self.layer_idx] = True
        return key, value

    def forward(
        self,
        hidden_states: torch.Tensor,
        tokens: "PackedTokens",
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_tokens: "PackedTokens | None" = None,
        attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states` are the real tokens (tokens, d_model) of the batch that `tokens` lays out;
        `encoder_hidden_states` is the encoder output (batch, source_seq, d_model), whose real tokens `encoder_tokens`
        finds."""
        query = self.split_heads(tokens.unpack(self.q_proj(hidden_states)))  # (batch, heads, q_seq, head_dim)
        # (batch, heads, k_seq, head_dim)
        key, value = self.keys_values(hidden_states, tokens, encoder_hidden_states, encoder_tokens, cache)

        # "eager" is the function above, equation 1 written out; "sdpa" (torch's fused scaled_dot_product_attention),
        # "flash_attention_*" and "flex_attention" are the kernels transformers registers for the same equation
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_scaled_dot_product_attention
        )
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.attention_dropout if self.training else 0.0,
            **kwargs,
        )
        output = output.reshape(tokens.batch, tokens.seq, -1)  # Concat(head_1..head_h): (batch, q_seq, d_model)
        return self.out_proj(tokens.pack(output)), weights  # (tokens, d_model)


class PositionwiseFeedForward(nn.Module):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, the same two layers at every position (section 3.3)."""

    def __init__(self, config: VanillaTransformerConfig, ffn_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, ffn_dim)
        self.activation = ACT2FN[config.activation_function]
        self.activation_dropout = nn.Dropout(config.activation_dropout)
        self.fc2 = nn.Linear(ffn_dim, config.d_model)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_dropout(self.activation(self.fc1(hidden_states))))


class AddAndNorm(nn.Module):
    """The "Add & Norm" around every sub-layer (sections 3.1 and 5.4): LayerNorm(x + Dropout(Sublayer(x))).

    With `normalize_before` (pre-LN) it becomes x + Dropout(Sublayer(LayerNorm(x))): the one place where the two
    variants differ.
    """

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.normalize_before = config.normalize_before
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.normalize_before:
            return hidden_states + self.dropout(sublayer(self.layer_norm(hidden_states)))
        return self.layer_norm(hidden_states + self.dropout(sublayer(hidden_states)))


class EncoderLayer(GradientCheckpointingLayer):
    """Encoder layer (section 3.1): self-attention over the source, then the feed-forward network."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int):
        super().__init__()
        self.self_attn = MultiHeadAttention(config, config.encoder_attention_heads, is_causal=False, layer_idx=layer_idx)
        self.self_attn_add_norm = AddAndNorm(config)
        self.feed_forward = PositionwiseFeedForward(config, config.encoder_ffn_dim)
        self.feed_forward_add_norm = AddAndNorm(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        tokens: "PackedTokens",
        attention_mask: torch.Tensor | None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        hidden_states = tokens.pack(hidden_states)  # (tokens, d_model): the sub-layers skip the padding
        hidden_states = self.self_attn_add_norm(
            hidden_states, lambda x: self.self_attn(x, tokens, attention_mask=attention_mask, **kwargs)[0]
        )
        hidden_states = self.feed_forward_add_norm(hidden_states, self.feed_forward)
        return tokens.unpack(hidden_states)  # (batch, seq, d_model), zeros at padding


class DecoderLayer(GradientCheckpointingLayer):
    """Decoder layer (section 3.1): masked self-attention over the target prefix, cross-attention to the encoder
    output ("encoder-decoder attention", 3.2.3), then the feed-forward network."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int):
        super().__init__()
        heads = config.decoder_attention_heads
        self.self_attn = MultiHeadAttention(config, heads, is_causal=True, layer_idx=layer_idx)
        self.self_attn_add_norm = AddAndNorm(config)
        self.cross_attn = MultiHeadAttention(config, heads, is_causal=False, layer_idx=layer_idx)
        self.cross_attn_add_norm = AddAndNorm(config)
        self.feed_forward = PositionwiseFeedForward(config, config.decoder_ffn_dim)
        self.feed_forward_add_norm = AddAndNorm(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        tokens: "PackedTokens",
        causal_mask: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor,
        encoder_tokens: "PackedTokens",
        cross_attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        hidden_states = tokens.pack(hidden_states)  # (tokens, d_model): the sub-layers skip the padding
        hidden_states = self.self_attn_add_norm(
            hidden_states, lambda x: self.self_attn(x, tokens, attention_mask=causal_mask, cache=cache, **kwargs)[0]
        )
        hidden_states = self.cross_attn_add_norm(
            hidden_states,
            lambda x: self.cross_attn(
                x, tokens, encoder_hidden_states, encoder_tokens, attention_mask=cross_attention_mask, cache=cache,
                **kwargs,
            )[0],
        )
        hidden_states = self.feed_forward_add_norm(hidden_states, self.feed_forward)
        return tokens.unpack(hidden_states)  # (batch, seq, d_model), zeros at padding


def stack_final_layer_norm(config: VanillaTransformerConfig) -> nn.Module:
    """The LayerNorm after a stack's last layer: pre-LN's only normalization of the stack's output."""
    return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.add_final_layer_norm else nn.Identity()


# Written into every saved config.json, beside this file and the configuration file that `save_pretrained` copies: a
# saved model then loads through the Auto classes with `trust_remote_code=True` where this package is not installed
AUTO_MAP = {
    "AutoConfig": "configuration_vanilla_transformer.VanillaTransformerConfig",
    "AutoModel": "modeling_vanilla_transformer.VanillaTransformerModel",
    "AutoModelForSeq2SeqLM": "modeling_vanilla_transformer.VanillaTransformerForConditionalGeneration",
}


class VanillaTransformerPreTrainedModel(PreTrainedModel):
    config: VanillaTransformerConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EncoderLayer", "DecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    # The masks come from transformers' masking utilities, which build flex_attention's block masks too
    _supports_flex_attn = True
    # Padded forwards and static-cache decoding steps trace into one graph (tested): PackedTokens computes every
    # position under torch.compile, so no shape depends on the data
    _can_compile_fullgraph = True

    def _init_weights(self, module: nn.Module):
        """Initialization as in the reference implementations of the paper (tensor2tensor, the Annotated
        Transformer): Glorot-uniform projections with zero biases (the packed K/V projection as one matrix, as
        `nn.MultiheadAttention` does), embeddings from N(0, d_model^-1) so that after the sqrt(d_model) scale they have
        unit variance, LayerNorm as the identity. Deterministic under `torch.manual_seed`."""
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            std = self.config.init_std if self.config.init_std is not None else self.config.d_model**-0.5
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:  # zero_pad_embedding
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, SinusoidalPositionalEncoding):
            init.copy_(module.table, module.build_table(*module.table.shape))

    def __init__(self, config: VanillaTransformerConfig, *args, **kwargs):
        config.check()  # fields may have been set since the config was built
        super().__init__(config, *args, **kwargs)

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        """The weights to tie. transformers ties none when `tie_word_embeddings` is False; here that flag unties the
        pre-softmax projection alone, and the source and target embeddings stay one matrix as long as
        `share_encoder_decoder_embeddings` says so (the two flags are independent, as in Marian and BART)."""
        if all_submodels:
            return super().get_expanded_tied_weights_keys(all_submodels=True)  # calls this on every submodel
        tied = dict(self._tied_weights_keys or {})
        if not self.config.tie_word_embeddings:
            tied.pop("lm_head.weight", None)
        return tied

    def _resize_token_embeddings(self, new_num_tokens, pad_to_multiple_of=None, mean_resizing=True) -> nn.Embedding:
        """What `resize_token_embeddings` does (after `tokenizer.add_tokens`). One shared vocabulary: the shared
        embedding and the pre-softmax projection (tied or not) follow, and both vocabulary sizes (the config keeps
        them equal). Separate vocabularies: the source side alone; the target side is
        `resize_decoder_token_embeddings`."""
        if self.config.share_encoder_decoder_embeddings:
            return super()._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        embeddings = self._get_resized_embeddings(
            self.get_input_embeddings(), new_num_tokens, pad_to_multiple_of, mean_resizing
        )
        self.set_input_embeddings(embeddings)
        return embeddings

    def resize_decoder_token_embeddings(
        self, new_num_tokens: int, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Separate vocabularies: resizes the target embedding and the pre-softmax projection (and its bias) to
        `new_num_tokens` target tokens, and `decoder_vocab_size` with them."""
        if self.config.share_encoder_decoder_embeddings:
            raise ValueError(
                "Source and target share one vocabulary (share_encoder_decoder_embeddings=True): resize it with "
                "`resize_token_embeddings`, which resizes both sides and the pre-softmax projection."
            )
        decoder = self.base_model.decoder
        embeddings = self._get_resized_embeddings(
            decoder.embeddings.embed_tokens, new_num_tokens, pad_to_multiple_of, mean_resizing
        )
        decoder.embeddings.embed_tokens = embeddings
        if (lm_head := self.get_output_embeddings()) is not None:
            # Resized even when tied: its bias (lm_head_bias) is its own; tie_weights below then shares the weight
            self.set_output_embeddings(
                self._get_resized_lm_head(lm_head, embeddings.num_embeddings, mean_resizing=mean_resizing)
            )
        self.config.decoder_vocab_size = embeddings.num_embeddings
        self.tie_weights()
        return embeddings

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.check()  # a config changed after the model was built must not write a checkpoint that won't load
        # transformers records only the saved class in `auto_map`; both model classes should load any saved model
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


class VanillaTransformerEncoder(VanillaTransformerPreTrainedModel):
    """The encoder stack: N encoder layers over the embedded source (section 3.1)."""

    _can_record_outputs = {"hidden_states": EncoderLayer, "attentions": MultiHeadAttention}

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.embeddings = InputEmbedding(config, config.vocab_size)
        self.layers = nn.ModuleList([EncoderLayer(config, layer_idx=i) for i in range(config.encoder_layers)])
        self.final_layer_norm = stack_final_layer_norm(config)
        self.post_init()

    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        hidden_states = self.embeddings(input_ids, inputs_embeds)  # (batch, source_seq, d_model)
        tokens = PackedTokens(attention_mask, *hidden_states.shape[:2])
        # Built once for all layers: every source position may see every non-padding source position
        mask = create_bidirectional_mask(self.config, inputs_embeds=hidden_states, attention_mask=attention_mask)
        for layer in self.layers:
            hidden_states = layer(hidden_states, tokens, mask, **kwargs)
        return BaseModelOutput(last_hidden_state=self.final_layer_norm(hidden_states))


class VanillaTransformerDecoder(VanillaTransformerPreTrainedModel):
    """The decoder stack: N decoder layers over the embedded target prefix, each attending to the encoder output."""

    _can_record_outputs = {
        "hidden_states": DecoderLayer,
        "attentions": OutputRecorder(MultiHeadAttention, index=1, layer_name="self_attn"),
        "cross_attentions": OutputRecorder(MultiHeadAttention, index=1, layer_name="cross_attn"),
    }

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.embeddings = InputEmbedding(config, config.decoder_vocab_size)
        self.layers = nn.ModuleList([DecoderLayer(config, layer_idx=i) for i in range(config.decoder_layers)])
        self.final_layer_norm = stack_final_layer_norm(config)
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # the name before transformers 5.24
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        if encoder_hidden_states is None:
            raise ValueError("The decoder attends to the encoder output: pass `encoder_hidden_states`.")
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        past_length = cache.get_seq_length() if cache is not None else 0
        # A static cache is sized by generate() beforehand (layer 0 asked: a fresh dynamic cache has no layers yet)
        if cache is not None and cache.get_max_length(0) > 0:
            self.embeddings.check_fits(cache.get_max_length(0))
        hidden_states = self.embeddings(input_ids, inputs_embeds, past_length)  # (batch, target_seq, d_model)

        # Built once for all layers. The mask of the future (section 3.2.3): position t sees positions <= t only.
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=hidden_states,
            attention_mask=attention_mask,
            cache=cache.self_attention_cache if cache is not None else None,
        )
        # Cross-attention sees every non-padding source position
        cross_attention_mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=hidden_states,
            attention_mask=encoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
        )
        batch, seq = hidden_states.shape[:2]
        # With a cache the padding mask also covers the past positions: the new ones are its last columns
        tokens = PackedTokens(attention_mask[:, -seq:] if attention_mask is not None else None, batch, seq)
        encoder_tokens = PackedTokens(encoder_attention_mask, *encoder_hidden_states.shape[:2])
        for layer in self.layers:
            # The encoder output goes positionally, so that gradient checkpointing passes its gradient back
            hidden_states = layer(
                hidden_states, tokens, causal_mask, encoder_hidden_states, encoder_tokens, cross_attention_mask,
                cache=cache, **kwargs,
            )
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=self.final_layer_norm(hidden_states), cache=cache
        )


class VanillaTransformerModel(VanillaTransformerPreTrainedModel):
    """The encoder-decoder Transformer without a head: returns the decoder's last hidden states."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.encoder = VanillaTransformerEncoder(config)
        self.decoder = VanillaTransformerDecoder(config)
        if config.share_encoder_decoder_embeddings:
            # One matrix for source and target tokens (a joint vocabulary, section 3.4)
            self._tied_weights_keys = {"decoder.embeddings.embed_tokens.weight": "encoder.embeddings.embed_tokens.weight"}
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embeddings.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.encoder.embeddings.embed_tokens = value
        if self.config.share_encoder_decoder_embeddings:
            self.decoder.embeddings.embed_tokens = value

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # the name before transformers 5.24
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: tuple[torch.Tensor] | BaseModelOutput | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqModelOutput:
        r"""
        input_ids (`(batch, source_seq)`): source token ids; `attention_mask` marks the non-padding ones with 1.
        decoder_input_ids (`(batch, target_seq)`): the target prefix, starting with `decoder_start_token_id`;
            `decoder_attention_mask` marks its non-padding tokens. With a `cache`, only the new tokens.
        encoder_outputs: a previous encoder result, to run the decoder alone (as `generate()` does).
        inputs_embeds / decoder_inputs_embeds: token embeddings instead of ids, before the sqrt(d_model) scale.
        """
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(
                last_hidden_state=encoder_outputs[0],
                hidden_states=encoder_outputs[1] if len(encoder_outputs) > 1 else None,
                attentions=encoder_outputs[2] if len(encoder_outputs) > 2 else None,
            )
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            cache=cache,
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            cache=decoder_outputs.cache,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing: the decoder reads <start> y_1 .. y_{n-1} and is trained to predict y_1 .. y_n."""
    shifted = labels.new_empty(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)  # ignored label positions read as padding


def labelled_prefix(labels: torch.Tensor) -> torch.Tensor:
    """The decoder positions a training pass needs, as a padding mask (1 = needed): every position up to the last
    labelled one. Later positions (the -100 padding of shorter targets) are scored by nothing and, the decoder being
    causal, seen by no earlier position, so they are skipped as padding."""
    labelled_at_or_after = (labels != -100).flip(-1).cumsum(-1).flip(-1)  # (batch, target_seq)
    return (labelled_at_or_after > 0).long()


def label_smoothed_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Cross-entropy against targets smoothed with epsilon_ls (section 5.4), averaged over the labelled tokens;
    labels of -100 (padding) are ignored. `num_items_in_batch` is the labelled-token count of a whole accumulated
    batch, which the Trainer passes so that gradient accumulation averages over all of its tokens."""
    loss = F.cross_entropy(
        logits.float().flatten(0, -2),
        labels.flatten().to(logits.device),
        ignore_index=-100,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    if num_items_in_batch is None:
        num_items_in_batch = (labels != -100).sum()
    return loss / num_items_in_batch


def without_gradient_to_pad_row(logits: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """The same logits, the pad token's with its gradient cut (`zero_pad_embedding` with tied weights): through the
    tied pre-softmax projection that gradient would move the pad embedding row off zero. With a zero row the pad's
    logit passes no gradient to the hidden states either, so nothing else changes."""
    is_pad = torch.arange(logits.shape[-1], device=logits.device) == pad_token_id  # (target_vocab,)
    return torch.where(is_pad, logits.detach(), logits)


class VanillaTransformerForConditionalGeneration(VanillaTransformerPreTrainedModel, GenerationMixin):
    """The Transformer with its pre-softmax projection to the target vocabulary (section 3.4): translation,
    training with `labels`, and `generate()` (greedy, beam search, sampling) with a key/value cache."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.model = VanillaTransformerModel(config)
        self.lm_head = nn.Linear(config.d_model, config.decoder_vocab_size, bias=config.lm_head_bias)
        # Tied to the target embedding (the source one when the two are shared): the paper's weight tying
        target_embedding = "encoder" if config.share_encoder_decoder_embeddings else "decoder"
        self._tied_weights_keys = {"lm_head.weight": f"model.{target_embedding}.embeddings.embed_tokens.weight"}
        self.post_init()

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # the name before transformers 5.24
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: tuple[torch.Tensor] | BaseModelOutput | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqLMOutput:
        r"""
        labels (`(batch, target_seq)`): target token ids, -100 where no loss is wanted (padding). Without
            `decoder_input_ids` the decoder input is `labels` shifted right behind `decoder_start_token_id`; without
            `decoder_attention_mask` the positions after each target's last label count as its padding.
        Padding positions (of `decoder_attention_mask`, or found from `labels`) are not computed: their logits are 0.
        logits_to_keep: project only the last this many positions onto the vocabulary (0 keeps all); generation
            needs only the last one.
        See `VanillaTransformerModel.forward` for the other arguments.
        """
        if labels is not None:
            use_cache = False  # a training pass decodes the whole target at once: nothing to cache
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id
                )
            if decoder_attention_mask is None:
                decoder_attention_mask = labelled_prefix(labels)
            elif ((labels != -100) & (decoder_attention_mask[:, -labels.shape[1] :] == 0)).any():
                raise ValueError(
                    "`labels` has targets at positions that `decoder_attention_mask` marks as padding, where the "
                    "model computes nothing. Set those labels to -100 (as DataCollatorForSeq2Seq does), or leave "
                    "out `decoder_attention_mask`: with labels the model finds the target's padding itself."
                )
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs: Seq2SeqModelOutput = self.model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        padding_mask = decoder_attention_mask
        if padding_mask is not None:
            padding_mask = padding_mask[:, -hidden_states.shape[1] :]  # with a cache, the new positions' columns
        if isinstance(logits_to_keep, int):
            keep = slice(-logits_to_keep, None)  # -0: keeps every position
        else:
            keep = logits_to_keep
        hidden_states = hidden_states[:, keep]
        tokens = PackedTokens(padding_mask[:, keep] if padding_mask is not None else None, *hidden_states.shape[:2])
        # (tokens, target_vocab) at the real positions: softmax of these is P(y_t | y_<t, x)
        logits = self.lm_head(tokens.pack(hidden_states))
        if self.config.zero_pad_embedding and self.config.tie_word_embeddings and logits.requires_grad:
            logits = without_gradient_to_pad_row(logits, self.config.pad_token_id)

        loss = None
        if labels is not None:
            loss = label_smoothed_cross_entropy(
                logits, tokens.pack(labels[:, keep]), self.config.label_smoothing, num_items_in_batch
            )
        logits = tokens.unpack(logits)  # (batch, target_seq, target_vocab), zeros at padding
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Used by `DataCollatorForSeq2Seq` to build decoder inputs alongside padded labels."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def _reorder_cache(self, cache: EncoderDecoderCache, beam_idx: torch.LongTensor) -> EncoderDecoderCache:
        """Beam search calls this after every step to make each beam carry on from the beam it extends. Only the
        decoder's own keys and values need reordering: beams move within their sentence, and every beam of a sentence
        attends to the same encoder output, so the cross-attention cache (the larger one) is right as it is."""
        cache.self_attention_cache.reorder_cache(beam_idx)
        return cache


# Not a concept of the paper but how this implementation skips padding: used by every layer above, explained once
# here, out of the way of the paper's pieces.
class PackedTokens:
    """Where the real (non-padding) tokens of a padded batch sit, to run the position-wise work on them alone.

    Sentences of different lengths are padded to one length, and padding is often 40% of a batch. Everything but
    attention treats each position alone (the Q/K/V/output projections, the feed-forward network, Add & Norm, the
    pre-softmax projection), so the layers gather the real tokens into one (tokens, d_model) matrix with `pack`, and
    attention, which needs the (batch, seq) grid, puts them back with `unpack` (zeros at padding, which the attention
    mask hides). Real positions get the numbers they would get with padding computed along (up to float rounding).

    `padding_mask` is (batch, seq) with 1 (or True) at real tokens. Without one, or with no padding in it, `pack` and
    `unpack` return their input as it is, and (batch, seq, ...) stands for (tokens, ...): every sub-layer works on
    either shape (as in each step of generation, which has no padding).

    Under `torch.compile` and `torch.export` every position is computed instead: the number of real tokens is known
    only from the data, and a graph cannot take a shape from the data. `unpack` then zeroes the padding positions,
    so that the outputs are the same as packed (zeros at padding, the real positions up to float rounding).
    """

    def __init__(self, padding_mask: torch.Tensor | None, batch: int, seq: int):
        self.batch, self.seq = batch, seq
        # A 4-D mask (a custom attention pattern) says nothing about padding: every position is then computed
        self.padding_mask = padding_mask if padding_mask is not None and padding_mask.dim() == 2 else None
        # Found on first use by `indices` (a hand-made cache: torch.compile cannot trace functools.cached_property)
        self._indices, self._looked_up = None, False

    @property
    def indices(self) -> torch.Tensor | None:
        """Positions of the real tokens in the flattened (batch * seq) grid, or None when every position is computed.
        Found once and only when first needed: it waits for the device (a host-device sync on a GPU)."""
        if torch.compiler.is_compiling():
            return None
        if self.padding_mask is not None and not self._looked_up:
            indices = self.padding_mask.flatten().nonzero().squeeze(1)  # (tokens,)
            self._indices = indices if indices.numel() < self.batch * self.seq else None
            self._looked_up = True
        return self._indices

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        if self.indices is None:
            return padded  # nothing to leave out: the (batch, seq, ...) tensor serves as it is
        return padded.flatten(0, 1).index_select(0, self.indices)  # (tokens, ...)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        if self.indices is None:
            if self.padding_mask is not None and torch.compiler.is_compiling():
                # (batch, seq, ...): every position was computed; padding reads 0, as when packed
                padding = self.padding_mask.view(self.batch, self.seq, *[1] * (packed.dim() - 2)) == 0
                return packed.masked_fill(padding, 0)
            return packed
        # In place on a fresh grid: the out-of-place copy would hold a second grid for a moment. The grid itself is
        # returned, not a view of it: FSDP's hooks (and in-place ops after a layer) need an output that owns its data
        grid = packed.new_zeros(self.batch, self.seq, *packed.shape[1:])  # (batch, seq, ...)
        grid.flatten(0, 1).index_copy_(0, self.indices, packed)
        return grid


__all__ = [
    "VanillaTransformerForConditionalGeneration",
    "VanillaTransformerModel",
    "VanillaTransformerPreTrainedModel",
]
