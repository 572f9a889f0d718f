"""Serving: translate() batches without changing a translation, every engine translates as PyTorch does, exports
cover or refuse every config variant, and the translation CLI gives one line per input line whatever the input."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM
from vanilla_transformer.analysis.serving_benchmark import SERVING_PATHS, serving_benchmark
from vanilla_transformer.conversion.marian import to_marian
from vanilla_transformer.serving import TranslationError, export_model, load_engine, translate
from vanilla_transformer.serving.engines import GenerateEngine

from .conftest import padded_batch, tiny_model
from .serving_fixtures import digit_strings, train_reverser

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SOURCES = digit_strings(120, seed=7)  # never trained on: the training strings come from seeds 100 and up


@pytest.fixture(scope="module")
def reverser(tmp_path_factory):
    return train_reverser(tmp_path_factory.mktemp("reverser"))


@pytest.fixture(scope="module")
def exports(reverser, tmp_path_factory):
    """The exports, in the folders where the serving benchmark looks for them."""
    folder = tmp_path_factory.mktemp("exports")
    return {
        "ctranslate2": export_model(str(reverser), "ctranslate2", folder / "ctranslate2-float32"),
        "ctranslate2-int8": export_model(str(reverser), "ctranslate2", folder / "ctranslate2-int8", quantization="int8"),
        "onnxruntime": export_model(str(reverser), "onnx", folder / "onnxruntime"),
    }


def test_the_reverser_learned_its_task(reverser):
    engine, tokenizer = load_engine(str(reverser))
    translations = list(translate(engine, tokenizer, SOURCES))
    assert np.mean([t == s[::-1] for t, s in zip(translations, SOURCES)]) >= 0.9


@pytest.mark.parametrize("parallel_batches", [1, 3])
@pytest.mark.parametrize("num_beams", [1, 4])
def test_batching_by_length_and_tokens_changes_no_translation(reverser, num_beams, parallel_batches):
    engine, tokenizer = load_engine(str(reverser))
    alone = [next(translate(engine, tokenizer, [s], num_beams=num_beams)) for s in SOURCES[:40]]
    # Small budgets: many batches of mixed sizes, sorted across the window, translated `parallel_batches` at once
    # (the same model from several threads) and put back in input order
    engine = GenerateEngine(engine.model, parallel_batches)
    batched = list(translate(engine, tokenizer, SOURCES[:40], batch_size=7, max_tokens_per_batch=50, sort_window=25, num_beams=num_beams))
    assert batched == alone


@pytest.mark.parametrize("engine_name", ["ctranslate2", "onnxruntime"])
def test_every_engine_translates_as_pytorch_does(reverser, exports, engine_name):
    torch_engine, tokenizer = load_engine(str(reverser))
    engine, _ = load_engine(str(exports[engine_name]))  # "auto" recognizes the export
    assert type(engine) is type(load_engine(str(exports[engine_name]), engine_name)[0])
    # Two batches at a time from two threads (CTranslate2's inter_threads, ONNX Runtime sessions shared) change nothing
    parallel, _ = load_engine(str(exports[engine_name]), threads=2, parallel_batches=2)
    for num_beams in (1, 4):
        want = list(translate(torch_engine, tokenizer, SOURCES, num_beams=num_beams))
        got = list(translate(engine, tokenizer, SOURCES, num_beams=num_beams))
        small_batches = dict(batch_size=8, num_beams=num_beams)
        assert list(translate(parallel, tokenizer, SOURCES, **small_batches)) == list(translate(engine, tokenizer, SOURCES, **small_batches))
        same = np.mean([g == w for g, w in zip(got, want)])
        # Greedy search is the same argmax everywhere; ONNX runs generate()'s own beam search, CTranslate2 its own
        assert same == 1.0 if num_beams == 1 or engine_name == "onnxruntime" else same >= 0.95, (num_beams, same)


def test_int8_ctranslate2_keeps_the_translations(reverser, exports):
    torch_engine, tokenizer = load_engine(str(reverser))
    engine, _ = load_engine(str(exports["ctranslate2-int8"]))
    want, got = list(translate(torch_engine, tokenizer, SOURCES)), list(translate(engine, tokenizer, SOURCES))
    # int8 weights cost a model this small (d_model 64) more than a real one: most lines still come out the same
    assert np.mean([g == w for g, w in zip(got, want)]) >= 0.75


CT2_VARIANTS = {
    "paper (post-LN, sinusoidal, shared)": {},
    "pre-LN": dict(normalize_before=True),
    "learned positions": dict(position_embedding_type="learned"),
    "separate vocabularies": dict(share_encoder_decoder_embeddings=False, tie_word_embeddings=False, decoder_vocab_size=30),
    "lm_head bias": dict(lm_head_bias=True),
    "shared embeddings, untied output": dict(tie_word_embeddings=False),
    "gelu": dict(activation_function="gelu"),
    "unscaled embeddings": dict(scale_embedding=False),
}


@pytest.mark.parametrize("overrides", CT2_VARIANTS.values(), ids=CT2_VARIANTS.keys())
def test_ctranslate2_scores_every_config_variant_as_pytorch_does(tokenizer, tmp_path, overrides):
    import ctranslate2

    model = tiny_model(vocab_size=len(tokenizer), **overrides)
    with torch.no_grad():  # random biases and LayerNorms, so that a weight put in the wrong place shows
        for name, parameter in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                parameter.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    export_model(str(tmp_path / "model"), "ctranslate2", tmp_path / "ct2")
    translator = ctranslate2.Translator(str(tmp_path / "ct2"))

    sources, lengths = padded_batch([6, 9, 4], vocab_size=30, seed=3)
    targets = torch.randint(4, 30, (3, 5), generator=torch.Generator().manual_seed(4))
    decoder_input_ids = torch.cat([torch.full((3, 1), model.config.decoder_start_token_id), targets], dim=1)
    with torch.no_grad():
        logits = model(input_ids=sources, attention_mask=lengths, decoder_input_ids=decoder_input_ids).logits
    want = torch.log_softmax(logits[:, :-1], -1).gather(-1, targets[..., None]).squeeze(-1)  # (3, 5)
    results = translator.score_batch(
        [tokenizer.convert_ids_to_tokens(row[mask.bool()]) for row, mask in zip(sources, lengths)],
        [tokenizer.convert_ids_to_tokens(row) for row in targets],
    )
    # CTranslate2 scores the target's tokens and then </s>: the first five are ours
    got = torch.tensor([result.log_probs[:5] for result in results])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_onnx_exports_a_shared_vocabulary_with_an_untied_output_projection(tokenizer, tmp_path):
    model = tiny_model(vocab_size=len(tokenizer), tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)  # unlike the embedding, so that exporting the wrong matrix shows
    model.generation_config.max_length = 12
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    export_model(str(tmp_path / "model"), "onnx", tmp_path / "onnx")
    torch_engine, _ = load_engine(str(tmp_path / "model"))
    onnx_engine, _ = load_engine(str(tmp_path / "onnx"))
    sources = ["Ein Mädchen klettert.", "Zwei junge Männer spielen draußen.", "Hunde laufen."]
    for num_beams in (1, 3):
        want = list(translate(torch_engine, tokenizer, sources, num_beams=num_beams))
        assert list(translate(onnx_engine, tokenizer, sources, num_beams=num_beams)) == want


def test_configs_ctranslate2_cannot_run_are_refused_by_name(tokenizer, tmp_path):
    model = tiny_model(vocab_size=len(tokenizer), add_final_layer_norm=True)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match=r"add_final_layer_norm=True with normalize_before=False.*--format onnx"):
        export_model(str(tmp_path / "model"), "ctranslate2", tmp_path / "ct2")
    assert not (tmp_path / "ct2").exists()


def test_an_export_never_writes_over_a_folder_it_did_not_make(reverser, exports, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not an earlier export"):
        export_model(str(reverser), "onnx", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="holds a model for the ctranslate2 engine, not for onnxruntime"):
        load_engine(str(exports["ctranslate2"]), "onnxruntime")


def test_the_model_exports_with_padding_masks_and_computes_the_same(reverser):
    model = AutoModelForSeq2SeqLM.from_pretrained(reverser).eval()
    input_ids, attention_mask = padded_batch([7, 4, 2], vocab_size=30)
    decoder_input_ids, decoder_attention_mask = padded_batch([5, 3, 1], vocab_size=30, seed=1)
    inputs = dict(
        input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
        decoder_attention_mask=decoder_attention_mask, use_cache=False,
    )
    exported = torch.export.export(model, (), inputs).module()
    with torch.no_grad():
        want, got = model(**inputs), exported(**inputs)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    assert (got.logits[decoder_attention_mask == 0] == 0).all()  # padding reads 0, as in eager mode
    torch.testing.assert_close(got.encoder_last_hidden_state, want.encoder_last_hidden_state, atol=1e-5, rtol=1e-5)


class FailsOn:
    """An engine that cannot translate one given source (as a real one may fail on a strange input)."""

    def __init__(self, engine, bad_ids, parallel_batches=1):
        self.engine, self.bad_ids, self.parallel_batches = engine, bad_ids, parallel_batches
        self.max_source_length = engine.max_source_length
        self.decoding_options = engine.decoding_options

    def translate_ids(self, sources, options):
        if self.bad_ids in sources:
            raise RuntimeError("cannot translate this")
        return self.engine.translate_ids(sources, options)


@pytest.mark.parametrize("parallel_batches", [1, 2])
def test_a_failing_sentence_costs_only_itself(reverser, parallel_batches):
    engine, tokenizer = load_engine(str(reverser))
    sources = SOURCES[:10]
    want = list(translate(engine, tokenizer, sources))
    failing = FailsOn(engine, tokenizer(sources[6])["input_ids"], parallel_batches)
    failures = []
    got = list(translate(failing, tokenizer, sources, batch_size=3, on_failure=lambda error: failures.append(error.line) or "?"))
    assert got == want[:6] + ["?"] + want[7:] and failures == [7]

    streamed = []
    with pytest.raises(TranslationError, match="line 7: the translation failed: RuntimeError: cannot translate this"):
        for translation in translate(failing, tokenizer, sources):
            streamed.append(translation)
    assert streamed == want[:6]  # every sentence before it was given out


def run_cli(*args, stdin: bytes):
    return subprocess.run([sys.executable, SCRIPTS / "translate.py", *map(str, args)], input=stdin, capture_output=True)


def test_the_cli_gives_one_line_per_input_line(reverser, exports):
    long_line = "1234567890" * 10  # 101 tokens; the model has 64 positions
    lines = ["123", "", "  ", long_line, "4567"]
    result = run_cli("--model", exports["ctranslate2"], stdin=("\n".join(lines) + "\n").encode())
    assert result.returncode == 0, result.stderr.decode()
    output = result.stdout.decode().split("\n")
    assert output[:3] == ["321", "", ""] and output[4] == "7654" and len(output) == len(lines) + 1
    assert "line 4: 101 tokens, cut to the first 64" in result.stderr.decode()


def test_the_cli_stops_at_invalid_utf8_naming_the_line_after_the_lines_before(reverser):
    result = run_cli("--model", reverser, "--engine", "torch", stdin=b"123\n45\n\xff\xfe99\n678\n")
    assert result.returncode == 1
    assert result.stdout.decode().splitlines() == ["321", "54"]
    errors = result.stderr.decode().strip().splitlines()
    assert errors == [
        "error: stdin line 3 is not valid UTF-8 (byte 0xff at byte 1 of the line); convert the file to UTF-8, e.g. "
        "with `iconv -f latin1 -t utf-8`."
    ]


MARIAN_VARIANTS = {
    "paper": {},
    "bias, gelu": dict(lm_head_bias=True, activation_function="gelu"),
    "shared embeddings, untied output": dict(tie_word_embeddings=False),
    "separate vocabularies": dict(share_encoder_decoder_embeddings=False, decoder_vocab_size=30),
}


@pytest.mark.parametrize("overrides", MARIAN_VARIANTS.values(), ids=MARIAN_VARIANTS.keys())
def test_marian_holding_our_weights_computes_our_logits(overrides):
    model = tiny_model(**overrides)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias") or name == "lm_head.weight":
                parameter.normal_(0, 0.5)
    marian = to_marian(model)
    input_ids, attention_mask = padded_batch([7, 4, 2], vocab_size=40)
    decoder_input_ids = padded_batch([5, 5, 5], vocab_size=model.config.decoder_vocab_size, seed=1)[0]
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    with torch.no_grad():
        want, got = model(**inputs).logits, marian(**inputs).logits
    torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-6)
    # Without the permutation (Marian's own [sin | cos] layout) the logits differ
    marian.model.encoder.embed_positions.weight.data.copy_(model.model.encoder.embeddings.embed_positions.table)
    with torch.no_grad():
        assert (marian(**inputs).logits - want).abs().max() > 1e-2


def test_the_serving_benchmark_compares_every_path_on_the_same_sentences(reverser, exports, tmp_path):
    sources = SOURCES[:30]
    (tmp_path / "test.src").write_text("\n".join(sources) + "\n")
    (tmp_path / "test.ref").write_text("\n".join(s[::-1] for s in sources) + "\n")
    node_script = Path(__file__).resolve().parent / "web" / "translate.mjs"
    with_node = shutil.which("node") and (node_script.parent / "node_modules" / "@huggingface" / "transformers").is_dir()
    summary = serving_benchmark(
        str(reverser), tmp_path / "test.src", tmp_path / "test.ref", exports["ctranslate2"].parent, threads=1, beams=(2, 1),
        transformers_js_script=str(node_script) if with_node else None, parallel_batches=2,
    )
    for mode in ("beam2", "greedy"):
        entry = summary["results"][mode]
        assert set(SERVING_PATHS) <= set(entry)
        # Marian holds the same weights and runs the same generate(): the same translations
        assert entry["marian"]["identical_to_translate"] == entry["input-order loop"]["identical_to_translate"] == 30
        assert entry["translate"]["chrf"] > 80  # one-word lines: BLEU's 4-grams find nothing to count
        assert set(entry["ratios"]) >= {"translate_speedup_over_input_order_loop", "translate_time_over_ctranslate2_float32",
                                        "onnxruntime_speedup_over_translate", "onnxruntime_int8_speedup_over_translate",
                                        "onnxruntime_speedup_over_translate_parallel"}
        assert entry["translate-parallel"]["identical_to_translate"] == 30
    assert entry["onnxruntime"]["identical_to_translate"] == 30
    if with_node:  # transformers.js decodes greedily: exactly translate()'s greedy lines
        assert entry["transformers.js"]["identical_to_translate"] == 30


def test_a_person_typing_gets_each_translation_at_once(reverser):
    import os
    import pty
    import select

    controller, terminal = pty.openpty()  # stdin is a terminal, as for someone typing
    process = subprocess.Popen(
        [sys.executable, SCRIPTS / "translate.py", "--model", reverser], stdin=terminal, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        for typed in ("123", "98765"):
            os.write(controller, typed.encode() + b"\n")
            # The translation comes while stdin stays open: no waiting for more lines or the end of input
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, f"no translation of {typed!r} within 60 s"
            assert process.stdout.readline().decode().strip() == typed[::-1]
    finally:
        process.kill()
        process.wait()
        os.close(controller)
        os.close(terminal)
