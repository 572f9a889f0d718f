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
    # Marian and BART accept `config.tie_word_embeddings = False` set afterwards; with our shared embeddings that
    # combination would save a checkpoint that does not load
    config = tiny_config()
    config.tie_word_embeddings = False
    with pytest.raises(ValueError, match=r"share_encoder_decoder_embeddings=True needs tie_word_embeddings=True.*share_encoder_decoder_embeddings=False"):
        AutoModelForSeq2SeqLM.from_config(config)
    model = tiny_model()
    model.config.tie_word_embeddings = False
    with pytest.raises(ValueError, match="needs tie_word_embeddings=True"):
        model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
    # The fix the message names: separate embeddings save and load
    model = tiny_model(share_encoder_decoder_embeddings=False, tie_word_embeddings=False)
    model.save_pretrained(tmp_path / "separate")
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "separate")
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
