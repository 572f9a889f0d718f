import pytest
import torch
from transformers import AutoConfig
from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration


def test_paper_base_defaults_and_parameter_count():
    config = VanillaTransformerConfig()
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (512, 6, 6)
    assert (config.encoder_attention_heads, config.encoder_ffn_dim, config.dropout) == (8, 2048, 0.1)
    assert config.activation_function == "relu" and config.position_embedding_type == "sinusoidal"
    assert config.scale_embedding and not config.normalize_before and not config.add_final_layer_norm
    assert config.share_encoder_decoder_embeddings and config.tie_word_embeddings
    # Names the ecosystem looks up through attribute_map
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (512, 8, 6)

    with torch.device("meta"):  # the count needs no memory
        model = VanillaTransformerForConditionalGeneration(config)
    # Three-way tying: one 37000 x 512 matrix serves source, target and the pre-softmax projection
    assert sum(p.numel() for p in model.parameters()) == 63_082_496  # the paper reports 65M for its base model


def test_pre_ln_gets_a_final_layer_norm_by_default_and_round_trips(tmp_path):
    config = VanillaTransformerConfig(normalize_before=True, vocab_size=100, position_embedding_type="learned")
    assert config.add_final_layer_norm
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, VanillaTransformerConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"d_model": 512, "encoder_attention_heads": 7}, r"`d_model` \(512\) must be divisible by `encoder_attention_heads`"),
        ({"d_model": 512, "decoder_attention_heads": 5}, r"must be divisible by `decoder_attention_heads`.*\(e\.g\. 4\)"),
        ({"encoder_layers": 0}, "`encoder_layers` must be a positive integer, got 0"),
        ({"d_model": -8}, "`d_model` must be a positive integer"),
        ({"decoder_ffn_dim": 0}, "`decoder_ffn_dim` must be a positive integer"),
        ({"vocab_size": 0}, "`vocab_size` must be a positive integer"),
        ({"max_position_embeddings": 0}, "`max_position_embeddings` must be a positive integer"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\), got 1.0"),
        ({"attention_dropout": -0.1}, r"`attention_dropout` must be in \[0, 1\)"),
        ({"activation_dropout": 1.5}, r"`activation_dropout` must be in \[0, 1\)"),
        ({"label_smoothing": 1.0}, r"`label_smoothing` must be in \[0, 1\)"),
        ({"activation_function": "relu6x"}, r"Unknown `activation_function` 'relu6x'; use one of .*'relu'"),
        ({"position_embedding_type": "rotary"}, r"Unknown `position_embedding_type` 'rotary'; use one of \['sinusoidal', 'learned', 'sinusoidal_marian', 'sinusoidal_fairseq'\]"),
        ({"d_model": 33, "encoder_attention_heads": 3, "decoder_attention_heads": 3}, "`d_model` must be even"),
        ({"layer_norm_eps": 0.0}, "`layer_norm_eps` must be positive"),
        ({"init_std": -1.0}, "`init_std` must be positive or None"),
        ({"vocab_size": 100, "pad_token_id": 100}, r"`pad_token_id` \(100\) is outside the vocabulary: it must be in \[0, 100\)"),
        ({"vocab_size": 100, "eos_token_id": -1}, r"`eos_token_id` \(-1\) is outside the vocabulary"),
        ({"vocab_size": 100, "bos_token_id": 200}, r"`bos_token_id` \(200\) is outside the vocabulary"),
        (
            {"vocab_size": 100, "decoder_vocab_size": 50, "share_encoder_decoder_embeddings": False, "decoder_start_token_id": 70},
            r"`decoder_start_token_id` \(70\) is outside the vocabulary: it must be in \[0, 50\) since `decoder_vocab_size` is 50",
        ),
        ({"vocab_size": 100, "decoder_vocab_size": 50}, "Shared source/target embeddings need one vocabulary"),
        ({"decoder_start_token_id": None}, "`decoder_start_token_id` must be set"),
        ({"pad_token_id": None}, "`pad_token_id` must be set"),
    ],
)
def test_invalid_values_are_refused_with_the_field_and_the_fix(values, message):
    with pytest.raises(ValueError, match=message):
        VanillaTransformerConfig(**values)


def test_a_tampered_config_file_does_not_load(tmp_path):
    VanillaTransformerConfig(vocab_size=100).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"d_model": 512', '"d_model": 500'))
    with pytest.raises(ValueError, match="must be divisible"):
        AutoConfig.from_pretrained(tmp_path)


def test_one_shared_vocabulary_has_one_size_whatever_sets_it():
    config = VanillaTransformerConfig(vocab_size=100)
    config.vocab_size = 120  # as resize_token_embeddings, or a user, does after tokenizer.add_tokens
    assert config.decoder_vocab_size == 120
    separate = VanillaTransformerConfig(vocab_size=100, decoder_vocab_size=50, share_encoder_decoder_embeddings=False)
    separate.vocab_size = 120
    assert separate.decoder_vocab_size == 50
