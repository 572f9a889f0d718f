"""The quick start on a folder of parallel text: it finds every test set, reports the validation set and each test
set, and replaces the final model by the average of its last checkpoints."""

import gzip
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM
from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from vanilla_transformer.recipes.quickstart import (
    Recipe,
    average_last_checkpoints,
    find_test_sets,
    run_quickstart,
    time_training_setups,
)

from .translation_fixtures import SOURCE, TARGET, TINY_MODEL, write_numbers_data


def test_every_test_set_with_both_sides_is_found(tmp_path):
    for name in ("test_2016_flickr.de.gz", "test_2016_flickr.en.gz", "test_2017_mscoco.de", "test_2017_mscoco.en",
                 "test_2018_flickr.de", "val.de", "val.en"):
        (tmp_path / name).write_bytes(gzip.compress(b"x\n") if name.endswith(".gz") else b"x\n")
    assert find_test_sets(tmp_path, "de", "en") == [tmp_path / "test_2016_flickr", tmp_path / "test_2017_mscoco"]
    with pytest.raises(FileNotFoundError, match=r"No test set with both sides .* test\*\.fr and test\*\.en"):
        find_test_sets(tmp_path, "fr", "en")


def test_the_quick_start_reports_the_validation_set_and_every_test_set_of_the_averaged_model(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    write_numbers_data(folder, {"train": 128, "val": 6, "test_2016_flickr": 5, "test_2017_mscoco": 4})
    recipe = Recipe(vocab_size=120, config_overrides=TINY_MODEL, max_steps=4, max_tokens_per_batch=256,
                    learning_rate=1e-3, warmup_steps=0, num_beams=2, max_length=32, average_last=2, save_steps=2)
    output = tmp_path / "model"
    results = run_quickstart(str(output), str(folder), SOURCE, TARGET, show_examples=0, recipe=recipe)
    assert list(results) == ["val", "test_2016_flickr", "test_2017_mscoco"]
    printed = capsys.readouterr().out
    for line in (f"averaged the weights of checkpoint-2, checkpoint-4 into {output}/", "validation set val: 6 sentences",
                 "test set test_2016_flickr: 5 sentences", "test set test_2017_mscoco: 4 sentences",
                 "min, tokenizer to scores"):
        assert line in printed
    assert printed.strip().splitlines()[-1].startswith("exact-match on test_2016_flickr: ")

    # A second run into the same folder would average the first run's checkpoints into its model: refused
    with pytest.raises(FileExistsError, match="checkpoint-2, checkpoint-4.*Remove them, or give another --output_dir"):
        run_quickstart(str(output), str(folder), SOURCE, TARGET, recipe=recipe)


def test_the_training_setups_are_timed_on_the_recipes_model():
    config = VanillaTransformerConfig(vocab_size=120)
    config.update_from_string(TINY_MODEL)
    step_seconds = time_training_setups(config, tokens_per_batch=128, repeats=1)
    assert set(step_seconds) == {(False, "sdpa"), (False, "eager"), (True, "sdpa"), (True, "eager")}
    assert all(seconds > 0 for seconds in step_seconds.values())


@pytest.mark.parametrize("fastest", [(False, "sdpa"), (True, "eager")])
def test_a_recipe_trains_in_the_setup_measured_fastest(tmp_path, capsys, monkeypatch, fastest):
    timings = {(False, "sdpa"): 0.4, (False, "eager"): 0.5, (True, "sdpa"): 0.6, (True, "eager"): 0.7} | {fastest: 0.2}
    monkeypatch.setattr("vanilla_transformer.recipes.quickstart.time_training_setups", lambda config, tokens: timings)
    folder = tmp_path / "data"
    folder.mkdir()
    write_numbers_data(folder, {"train": 64, "val": 3, "test": 3})
    recipe = Recipe(vocab_size=120, config_overrides=TINY_MODEL, max_steps=2, max_tokens_per_batch=256,
                    learning_rate=1e-3, warmup_steps=0, num_beams=1, max_length=32, fastest_setup=True)
    run_quickstart(str(tmp_path / "model"), str(folder), SOURCE, TARGET, show_examples=0, recipe=recipe)
    training_args = torch.load(tmp_path / "model" / "training_args.bin", weights_only=False)
    assert training_args.bf16 is fastest[0]
    precision = "bf16 mixed precision" if fastest[0] else "fp32"
    assert f"training in {precision} with {fastest[1]} attention, the fastest here" in capsys.readouterr().out


def test_the_final_model_becomes_the_average_of_the_last_checkpoints(tmp_path):
    config = VanillaTransformerConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                      decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=20)
    weights = []
    for step in (100, 200, 300):
        torch.manual_seed(step)
        model = VanillaTransformerForConditionalGeneration(config)
        model.save_pretrained(tmp_path / f"checkpoint-{step}")
        weights.append(model.lm_head.weight.detach())
    model.save_pretrained(tmp_path)  # the run's final model, the last checkpoint's weights
    average_last_checkpoints(tmp_path, 2)
    averaged = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert torch.allclose(averaged.lm_head.weight, (weights[1] + weights[2]) / 2)
    assert Path(tmp_path / "checkpoint-100").is_dir()  # the checkpoints stay
