"""save_pretrained / from_pretrained through the Auto classes: same outputs, bit for bit, from safetensors only."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM
from vanilla_transformer import VanillaTransformerForConditionalGeneration, VanillaTransformerModel

from .conftest import padded_batch, tiny_config, tiny_model

VARIANTS = {
    "paper": {},
    "pre-LN, learned positions": {"normalize_before": True, "position_embedding_type": "learned"},
    "separate vocabularies, untied biased output": {
        "share_encoder_decoder_embeddings": False,
        "tie_word_embeddings": False,
        "decoder_vocab_size": 30,
        "lm_head_bias": True,
    },
    "separate embeddings, tied output": {"share_encoder_decoder_embeddings": False},
    "shared embeddings, untied biased output": {"tie_word_embeddings": False, "lm_head_bias": True},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_is_bit_identical(tmp_path, variant):
    model = tiny_model("sdpa", **VARIANTS[variant])
    with torch.no_grad():  # make every weight, biases and norms too, differ from its initial value
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    model.save_pretrained(tmp_path)
    # Weights only as safetensors; the model's code travels with them (for trust_remote_code without the package)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "configuration_vanilla_transformer.py",
        "generation_config.json",
        "model.safetensors",
        "modeling_vanilla_transformer.py",
    ]

    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is VanillaTransformerForConditionalGeneration
    src, src_mask = padded_batch([6, 3])
    tgt, tgt_mask = padded_batch([4, 4], seed=1, vocab_size=30)
    with torch.no_grad():
        before = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)
        after = loaded(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)
    assert torch.equal(before.logits, after.logits)
    assert {n for n, _ in loaded.named_parameters()} == {n for n, _ in model.named_parameters()}
    tied = loaded.lm_head.weight is loaded.model.decoder.embeddings.embed_tokens.weight
    assert tied == loaded.config.tie_word_embeddings
    shared = loaded.model.encoder.embeddings.embed_tokens.weight is loaded.model.decoder.embeddings.embed_tokens.weight
    assert shared == loaded.config.share_encoder_decoder_embeddings


def test_auto_classes_pick_the_right_models(tmp_path):
    model = tiny_model("sdpa")
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "VanillaTransformerConfig"
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is VanillaTransformerModel
    src, src_mask = padded_batch([5])
    with torch.no_grad():
        full = model.model(input_ids=src, attention_mask=src_mask, decoder_input_ids=src[:, :3])
        alone = base(input_ids=src, attention_mask=src_mask, decoder_input_ids=src[:, :3])
    assert torch.equal(full.last_hidden_state, alone.last_hidden_state)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_attention_implementation_is_chosen_at_load_time(tmp_path, attn_implementation):
    tiny_model("sdpa").save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, attn_implementation=attn_implementation)
    assert loaded.config._attn_implementation == attn_implementation


def test_a_config_changed_after_it_was_built_is_checked_before_anything_is_built_or_written(tmp_path):
    config = tiny_config()
    config.decoder_vocab_size = 30  # shared embeddings need one vocabulary
    with pytest.raises(ValueError, match=r"Shared source/target embeddings need one vocabulary.*share_encoder_decoder_embeddings=False"):
        AutoModelForSeq2SeqLM.from_config(config)
    model = tiny_model()
    model.config.decoder_vocab_size = 30
    with pytest.raises(ValueError, match="Shared source/target embeddings need one vocabulary"):
        model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_untying_the_output_projection_set_afterwards_works_as_in_marian(tmp_path):
    """`config.tie_word_embeddings = False` on a shared-vocabulary config (what Marian and BART accept): one embedding
    for both stacks, a pre-softmax projection of its own, kept through save and load."""
    config = tiny_config()
    config.tie_word_embeddings = False
    model = AutoModelForSeq2SeqLM.from_config(config)
    encoder_embedding = model.model.encoder.embeddings.embed_tokens.weight
    assert encoder_embedding is model.model.decoder.embeddings.embed_tokens.weight
    assert model.lm_head.weight is not encoder_embedding
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)  # the projection trains apart from the embedding
    model.save_pretrained(tmp_path)
    loaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert torch.equal(loaded.model.encoder.embeddings.embed_tokens.weight, encoder_embedding)
    assert loaded.model.encoder.embeddings.embed_tokens.weight is loaded.model.decoder.embeddings.embed_tokens.weight


RESIZE_VARIANTS = {
    "paper (one vocabulary, tied)": {},
    "one vocabulary, untied biased output": {"tie_word_embeddings": False, "lm_head_bias": True},
    "separate vocabularies, tied": {"share_encoder_decoder_embeddings": False, "decoder_vocab_size": 30},
    "separate vocabularies, untied": {"share_encoder_decoder_embeddings": False, "decoder_vocab_size": 30, "tie_word_embeddings": False},
}


@pytest.mark.parametrize("variant", RESIZE_VARIANTS)
def test_resizing_after_adding_tokens_keeps_every_vocabulary_consistent(tmp_path, variant):
    """`tokenizer.add_tokens(...)` then `model.resize_token_embeddings(len(tokenizer))` (and, with a separate target
    vocabulary, `resize_decoder_token_embeddings`): the embeddings, the pre-softmax projection and the config's sizes
    agree, the old rows are kept, the ties stay, and the model trains, saves and loads."""
    model = tiny_model(**RESIZE_VARIANTS[variant])
    config = model.config
    old_source, old_target = config.vocab_size, config.decoder_vocab_size
    old_embedding = model.model.encoder.embeddings.embed_tokens.weight.detach().clone()
    old_projection = model.lm_head.weight.detach().clone()
    model.resize_token_embeddings(old_source + 5)
    new_target = old_target + 5
    if not config.share_encoder_decoder_embeddings:
        assert (config.vocab_size, config.decoder_vocab_size) == (old_source + 5, old_target)
        model.resize_decoder_token_embeddings(new_target)
    else:
        with pytest.raises(ValueError, match="share one vocabulary.*resize_token_embeddings"):
            model.resize_decoder_token_embeddings(new_target)
    assert (config.vocab_size, config.decoder_vocab_size) == (old_source + 5, new_target)
    encoder, decoder = model.model.encoder.embeddings.embed_tokens, model.model.decoder.embeddings.embed_tokens
    assert encoder.num_embeddings == config.vocab_size and decoder.num_embeddings == config.decoder_vocab_size
    assert model.lm_head.weight.shape[0] == new_target
    if model.lm_head.bias is not None:
        assert model.lm_head.bias.shape == (new_target,)
    assert (encoder.weight is decoder.weight) == config.share_encoder_decoder_embeddings
    assert (model.lm_head.weight is decoder.weight) == config.tie_word_embeddings
    assert torch.equal(encoder.weight[:old_source], old_embedding)
    assert torch.equal(model.lm_head.weight[:old_target], old_projection)

    # A new token on both sides trains and the model round-trips
    input_ids = torch.tensor([[old_source + 4, 5, 6, 2]])
    labels = torch.tensor([[new_target - 1, 7, 2]])
    model.train()
    model(input_ids=input_ids, labels=labels).loss.backward()
    assert encoder.weight.grad[old_source + 4].abs().sum() > 0
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        want = model(input_ids=input_ids, labels=labels).logits
        assert torch.equal(loaded(input_ids=input_ids, labels=labels).logits, want)
