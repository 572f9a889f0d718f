"""generate(): the key/value cache changes nothing but speed, and padding changes nothing at all."""

import pytest
import torch
from transformers import DynamicCache, EncoderDecoderCache, StaticCache

from .conftest import padded_batch, tiny_model

LENGTHS = [7, 3, 5, 1]


def generate(model, src, src_mask, **kwargs):
    with torch.no_grad():
        return model.generate(input_ids=src, attention_mask=src_mask, max_new_tokens=12, **kwargs)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_cached_greedy_equals_uncached_on_a_padded_batch(attn_implementation):
    model = tiny_model(attn_implementation)
    src, src_mask = padded_batch(LENGTHS)
    cached = generate(model, src, src_mask, do_sample=False)
    uncached = generate(model, src, src_mask, do_sample=False, use_cache=False)
    assert cached.shape[1] > 1 and torch.equal(cached, uncached)


def test_a_static_cache_generates_the_same_tokens():
    # The cache that transformers compiles the decoding step with
    model = tiny_model("sdpa")
    src, src_mask = padded_batch(LENGTHS)
    static = generate(model, src, src_mask, cache_implementation="static", return_dict_in_generate=True)
    assert type(static.cache.self_attention_cache).__name__ == "StaticCache"
    assert torch.equal(static.sequences, generate(model, src, src_mask))


def test_a_decoding_step_with_a_static_cache_traces_into_one_graph():
    # What compiled generation needs (transformers compiles the step on GPUs with a static cache): no graph break,
    # so nothing in a step stalls on the device's numbers
    model = tiny_model("sdpa")
    src, src_mask = padded_batch(LENGTHS)
    cache = EncoderDecoderCache(StaticCache(config=model.config, max_cache_len=10), DynamicCache(config=model.config))
    with torch.no_grad():
        encoder_outputs = model.get_encoder()(input_ids=src, attention_mask=src_mask)

        def step(decoder_input_ids):
            return model(
                encoder_outputs=encoder_outputs, attention_mask=src_mask, decoder_input_ids=decoder_input_ids,
                cache=cache, use_cache=True, logits_to_keep=1,
            )

        first = step(torch.ones(len(LENGTHS), 1, dtype=torch.long))  # fills the cross-attention cache
        explanation = torch._dynamo.explain(step)(first.logits.argmax(-1))
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    assert model._can_compile_fullgraph  # what the library's compile and static-cache paths read


def test_a_padded_training_forward_traces_into_one_graph():
    # torch.compile(model, fullgraph=True) for training: padding skipped eagerly is computed (and zeroed) when traced
    model = tiny_model("sdpa").train()
    src, src_mask = padded_batch(LENGTHS)
    target, target_mask = padded_batch([4, 6, 2, 3], seed=3)
    labels = target.masked_fill(target_mask == 0, -100)
    explanation = torch._dynamo.explain(lambda: model(input_ids=src, attention_mask=src_mask, labels=labels).loss)()
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


def test_a_static_cache_longer_than_the_position_table_is_refused_clearly():
    model = tiny_model("sdpa", max_position_embeddings=8)
    src, src_mask = padded_batch([5])
    # generate() sizes the cache for the 12 positions that feed the decoder (the start token and 11 new ones): refused
    # at the first step, before any work, rather than when the positions run out
    with pytest.raises(ValueError, match=r"reaches position 12, but the model has max_position_embeddings=8"):
        generate(model, src, src_mask, cache_implementation="static")


def test_beam_search_with_cache_equals_cache_free_beam_search():
    model = tiny_model("sdpa")
    src, src_mask = padded_batch(LENGTHS)
    kwargs = dict(num_beams=4, num_return_sequences=4, output_scores=True, return_dict_in_generate=True)
    cached = generate(model, src, src_mask, **kwargs)
    uncached = generate(model, src, src_mask, use_cache=False, **kwargs)
    assert cached.sequences.shape[0] == len(LENGTHS) * 4
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.allclose(cached.sequences_scores, uncached.sequences_scores, atol=1e-5)


def test_a_padded_batch_translates_each_source_as_if_alone():
    model = tiny_model("sdpa")
    src, src_mask = padded_batch(LENGTHS)
    batched = generate(model, src, src_mask, num_beams=4)
    for row, length in enumerate(LENGTHS):
        alone = generate(model, src[row : row + 1, :length], src_mask[row : row + 1, :length], num_beams=4)
        assert batched[row, : alone.shape[1]].tolist() == alone[0].tolist()


def test_sampling_is_reproducible_under_a_seed_and_respects_max_new_tokens():
    model = tiny_model("sdpa")
    src, src_mask = padded_batch(LENGTHS)
    kwargs = dict(do_sample=True, top_k=10, num_return_sequences=3, eos_token_id=None)
    torch.manual_seed(5)
    first = generate(model, src, src_mask, **kwargs)
    torch.manual_seed(5)
    again = generate(model, src, src_mask, **kwargs)
    assert torch.equal(first, again)
    assert first.shape == (len(LENGTHS) * 3, 1 + 12)  # decoder_start_token_id, then 12 new tokens
    assert torch.all(first[:, 0] == model.config.decoder_start_token_id)


def test_the_old_cache_argument_past_key_values_still_decodes_with_the_cache():
    # Hand-written decoding loops and libraries older than transformers 5.24 pass the cache as `past_key_values`
    model = tiny_model("sdpa")
    src, src_mask = padded_batch([5, 7])
    target = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 10]])
    with torch.no_grad():
        full = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=target).logits[:, -1]
        prefix = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=target[:, :-1], use_cache=True)
        with pytest.warns(FutureWarning, match="`past_key_values` is deprecated .* Use `cache` instead"):
            step = model(
                encoder_outputs=(prefix.encoder_last_hidden_state,), attention_mask=src_mask,
                decoder_input_ids=target[:, -1:], past_key_values=prefix.cache,
            ).logits[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)
