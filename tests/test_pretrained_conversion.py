"""The pretrained translators (opus-mt base, tc-big, tiny; NLLB; M2M100; FSMT) converted into our model compute what
transformers' own class of each family computes: logits, greedy and beam-search outputs with the source's generation
config, and the tokenizer's ids after the round trip. Checkpoints are built here with each family's published
settings and random weights (tests/pretrained_fixtures.py): no real weights are reachable."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, BartConfig, BartForConditionalGeneration

from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.conversion.pretrained import ConversionError, convert_pretrained_translator

from . import pretrained_fixtures
from .hub_server import HubServer

pytest.importorskip("sentencepiece", reason="the opus-mt and M2M100 tokenizers need sentencepiece (the test extra)")
pytest.importorskip("sacremoses", reason="FSMT's tokenizer needs sacremoses (the test extra)")

FAMILIES = ["opus-mt base", "tc-big", "tiny", "nllb", "m2m100", "fsmt"]
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SOURCES = pretrained_fixtures.sentences(5, seed=1) + ["Ein Hund.", pretrained_fixtures.sentences(1, seed=2)[0] * 2]
TARGETS = pretrained_fixtures.sentences(7, seed=3)


@pytest.fixture(scope="module", params=FAMILIES)
def converted(request, tmp_path_factory):
    """(family, source folder, converted folder)."""
    folder = tmp_path_factory.mktemp(request.param.replace(" ", "-"))
    source = pretrained_fixtures.checkpoint(folder / "source", request.param)
    convert_pretrained_translator(str(source), folder / "converted")
    return request.param, source, folder / "converted"


def source_model(source: Path):
    from transformers import AutoConfig

    from vanilla_transformer.conversion.pretrained import family_classes

    return family_classes(AutoConfig.from_pretrained(source).model_type).from_pretrained(source).eval()


def test_logits_equal_the_source_class_on_padded_batches_of_mixed_lengths(converted):
    family, source_dir, converted_dir = converted
    source, ours = source_model(source_dir), AutoModelForSeq2SeqLM.from_pretrained(converted_dir).eval()
    assert isinstance(ours, VanillaTransformerForConditionalGeneration)
    batch = AutoTokenizer.from_pretrained(source_dir)(SOURCES, text_target=TARGETS, padding=True, return_tensors="pt")
    target_mask = (batch["labels"] != source.config.pad_token_id).long()
    assert (target_mask == 0).any() and (batch["attention_mask"] == 0).any(), "the batch must pad both sides"
    decoder_input_ids = ours.prepare_decoder_input_ids_from_labels(batch["labels"].masked_fill(target_mask == 0, -100))
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=decoder_input_ids)
    with torch.no_grad():
        theirs = source(**inputs, use_cache=False).logits
        for implementation in ("eager", "sdpa"):
            ours.set_attn_implementation(implementation)
            logits = ours(**inputs, decoder_attention_mask=target_mask).logits
            real = target_mask.bool()
            torch.testing.assert_close(logits[real], theirs[real], atol=1e-5, rtol=0, msg=f"{family}, {implementation}")


def test_greedy_and_beam_search_equal_the_source_with_its_generation_config(converted):
    family, source_dir, converted_dir = converted
    source, ours = source_model(source_dir), AutoModelForSeq2SeqLM.from_pretrained(converted_dir).eval()
    assert ours.generation_config.to_diff_dict() == source.generation_config.to_diff_dict()
    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    batch = tokenizer(SOURCES, padding=True, return_tensors="pt")
    extra = {"forced_bos_token_id": tokenizer.convert_tokens_to_ids("eng_Latn")} if family == "nllb" else {}
    with torch.no_grad():
        for search in ({"num_beams": 1, "do_sample": False}, {}):  # {}: the source's own (beam search)
            expected = source.generate(**batch, max_new_tokens=12, **search, **extra)
            assert torch.equal(ours.generate(**batch, max_new_tokens=12, **search, **extra), expected), (family, search)
    if family == "nllb":
        assert (expected[:, 1] == extra["forced_bos_token_id"]).all()


def test_the_converted_tokenizer_gives_the_sources_ids(converted):
    family, source_dir, converted_dir = converted
    source, ours = AutoTokenizer.from_pretrained(source_dir), AutoTokenizer.from_pretrained(converted_dir)
    assert type(ours) is type(source)
    assert ours(SOURCES, text_target=TARGETS) == source(SOURCES, text_target=TARGETS)
    if family == "nllb":
        for tokenizer in (source, ours):
            tokenizer.src_lang, tokenizer.tgt_lang = "fra_Latn", "deu_Latn"
        assert ours(SOURCES, text_target=TARGETS) == source(SOURCES, text_target=TARGETS)
        assert ours("Un chien.")["input_ids"][0] == ours.convert_tokens_to_ids("fra_Latn")


def test_marians_zero_start_row_stays_zero_when_fine_tuned(tmp_path):
    converted_dir = tmp_path / "converted"
    convert_pretrained_translator(str(pretrained_fixtures.checkpoint(tmp_path / "source", "opus-mt base")), converted_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(converted_dir).train()
    tokenizer = AutoTokenizer.from_pretrained(converted_dir)
    pad = model.config.pad_token_id
    assert model.config.decoder_start_token_id == pad and model.lm_head.weight is model.get_input_embeddings().weight
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    batch = tokenizer(SOURCES, text_target=TARGETS, padding=True, return_tensors="pt")
    batch["labels"] = batch["labels"].masked_fill(batch["labels"] == pad, -100)
    before = model.lm_head.weight.detach().clone()
    for _ in range(3):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    weight = model.get_input_embeddings().weight
    assert torch.count_nonzero(weight[pad]) == 0
    assert not torch.equal(weight, before), "the other rows train"


def bart_folder(folder: Path) -> Path:
    BartForConditionalGeneration(BartConfig(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "damage, message",
    [
        ("not a model", r"is not a model folder or Hub repository"),
        ("another family", r"is a 'bart' model \(learned positions and a LayerNorm on the embeddings"),
        ("tokenizer file missing", r"The tokenizer of .* cannot be loaded .* put the tokenizer files"),
        ("tokenizer of another model", r"has token ids up to \d+ but the model embeds \d+ tokens"),
        ("output holds a model", r"already holds a model; nothing was written"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, damage, message):
    source = pretrained_fixtures.checkpoint(tmp_path / "source", "opus-mt base")
    output = tmp_path / "out"
    if damage == "not a model":
        source = tmp_path / "empty"
        source.mkdir()
    elif damage == "another family":
        source = bart_folder(tmp_path / "bart")
    elif damage == "tokenizer file missing":
        (source / "vocab.json").unlink()
    elif damage == "tokenizer of another model":
        for name in ("vocab.json", "source.spm", "target.spm", "tokenizer_config.json"):
            (source / name).unlink()
        pretrained_fixtures.nllb_tokenizer(source)
    elif damage == "output holds a model":
        bart_folder(output)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConversionError, match=message):
        convert_pretrained_translator(str(source), output)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing written, no partial folder left"
    if damage == "output holds a model":
        assert (output / "model.safetensors").exists()


def test_convert_script_over_http_from_the_local_hub(tmp_path):
    """`convert.py --model USER/NAME` against the Hub server on 127.0.0.1: the source repository pulled with its
    tokenizer and generation config, converted, and loaded."""
    source = pretrained_fixtures.checkpoint(tmp_path / "source", "nllb")
    with HubServer({"alice-token": "alice"}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "home"), "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": "alice-token", "PATH": "/usr/bin:/bin"}
        upload = (
            "import sys; from huggingface_hub import HfApi; api = HfApi(); api.create_repo('alice/nllb-tiny'); "
            "api.upload_folder(folder_path=sys.argv[1], repo_id='alice/nllb-tiny')"
        )
        uploaded = subprocess.run([sys.executable, "-c", upload, source], capture_output=True, text=True, env=env, timeout=300)
        assert uploaded.returncode == 0, uploaded.stderr[-3000:]
        result = subprocess.run(
            [sys.executable, SCRIPTS / "convert.py", "--model", "alice/nllb-tiny", "--output_dir", tmp_path / "out"],
            capture_output=True, text=True, env=env, timeout=300,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "converted the m2m_100 model alice/nllb-tiny" in result.stdout
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out")
    assert model.config.position_embedding_type == "sinusoidal_fairseq" and model.config.normalize_before
    assert AutoTokenizer.from_pretrained(tmp_path / "out")("Ein Hund.") == AutoTokenizer.from_pretrained(source)("Ein Hund.")


def write_pairs(prefix: Path, source_key: str, target_key: str, count: int = 40):
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.{source_key}").write_text("\n".join(pretrained_fixtures.sentences(count, seed=4)) + "\n")
    Path(f"{prefix}.{target_key}").write_text("\n".join(pretrained_fixtures.sentences(count, seed=5)) + "\n")


def fine_tune(model_dir: Path, data: Path, output_dir: Path, source_lang: str, target_lang: str, **extra):
    from transformers import Seq2SeqTrainingArguments

    from vanilla_transformer.training import DataTrainingArguments, ModelArguments, run_translation

    return run_translation(
        ModelArguments(model_name_or_path=str(model_dir)),
        DataTrainingArguments(
            source_lang=source_lang, target_lang=target_lang, train_file=str(data), validation_file=str(data),
            max_source_length=32, max_target_length=32, max_tokens_per_batch=200, filter_pairs=True,
            tokenized_cache_dir=str(output_dir.parent / "cache"),
        ),
        Seq2SeqTrainingArguments(
            output_dir=str(output_dir), do_train=True, do_eval=True, max_steps=3, learning_rate=1e-3,
            save_strategy="no", report_to="none", disable_tqdm=True, label_smoothing_factor=0.1, **extra,
        ),
    )


def test_run_translation_fine_tunes_a_converted_opus_mt_that_reloads_with_its_tokenizer(tmp_path):
    convert_pretrained_translator(str(pretrained_fixtures.checkpoint(tmp_path / "source", "opus-mt base")), tmp_path / "converted")
    write_pairs(tmp_path / "data" / "train", "de", "en")
    metrics = fine_tune(tmp_path / "converted", tmp_path / "data" / "train", tmp_path / "tuned", "de", "en")
    assert metrics["train_loss"] > 0 and "eval_loss" in metrics
    tuned = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "tuned")
    assert not torch.equal(tuned.lm_head.bias, AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "converted").lm_head.bias)
    assert torch.count_nonzero(tuned.get_input_embeddings().weight[tuned.config.pad_token_id]) == 0
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tuned")  # spm files and vocabulary saved with it
    assert tokenizer(SOURCES) == AutoTokenizer.from_pretrained(tmp_path / "converted")(SOURCES)
    assert tuned.generation_config.bad_words_ids == [[tuned.config.pad_token_id]]


def test_run_translation_fine_tunes_nllb_with_its_language_codes(tmp_path):
    convert_pretrained_translator(str(pretrained_fixtures.checkpoint(tmp_path / "source", "nllb")), tmp_path / "converted")
    write_pairs(tmp_path / "data" / "train", "deu", "fra")  # transformers' convention: the code's part before "_"
    fine_tune(tmp_path / "converted", tmp_path / "data" / "train", tmp_path / "tuned", "deu_Latn", "fra_Latn")
    tuned = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "tuned")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tuned")
    french = tokenizer.convert_tokens_to_ids("fra_Latn")
    assert tuned.generation_config.forced_bos_token_id == french
    assert (tokenizer.src_lang, tokenizer.tgt_lang) == ("deu_Latn", "fra_Latn")
    batch = tokenizer(SOURCES[:2], text_target=TARGETS[:2])
    assert batch["input_ids"][0][0] == tokenizer.convert_tokens_to_ids("deu_Latn") and batch["labels"][0][0] == french
    with torch.no_grad():
        generated = tuned.generate(**tokenizer(SOURCES[:2], return_tensors="pt", padding=True), max_new_tokens=5)
    assert (generated[:, 1] == french).all()
    with pytest.raises(ValueError, match=r"'german' is not a language code of this NllbTokenizer: give the language as one of its"):
        fine_tune(tmp_path / "converted", tmp_path / "data" / "train", tmp_path / "again", "german", "fra_Latn")


def test_lora_adapters_save_load_and_merge_into_the_merged_weights(tmp_path):
    peft = pytest.importorskip("peft", reason="LoRA needs peft (the test extra)")
    convert_pretrained_translator(str(pretrained_fixtures.checkpoint(tmp_path / "source", "opus-mt base")), tmp_path / "converted")
    base = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "converted")
    # The attention and feed-forward projections, as named in docs/pretrained.md
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "kv_proj", "out_proj", "fc1", "fc2"], init_lora_weights=False)
    model = peft.get_peft_model(base, lora)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    batch = AutoTokenizer.from_pretrained(tmp_path / "converted")(SOURCES, return_tensors="pt", padding=True)
    decoder_input_ids = torch.full((len(SOURCES), 3), base.config.decoder_start_token_id)
    with torch.no_grad():
        expected = model(**batch, decoder_input_ids=decoder_input_ids).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = peft.PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "converted"), tmp_path / "adapter")
    merged = reloaded.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    with torch.no_grad():
        for candidate in (reloaded, merged, AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merged")):
            torch.testing.assert_close(candidate(**batch, decoder_input_ids=decoder_input_ids).logits, expected, atol=1e-5, rtol=0)


def test_frozen_embeddings_stay_as_converted_while_the_rest_fine_tunes(tmp_path):
    convert_pretrained_translator(str(pretrained_fixtures.checkpoint(tmp_path / "source", "tc-big")), tmp_path / "converted")
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "converted").train()
    embeddings = model.get_input_embeddings()
    embeddings.weight.requires_grad_(False)  # tied: the pre-softmax projection is frozen with it
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "converted")
    model(**tokenizer(SOURCES, text_target=TARGETS, padding=True, return_tensors="pt")).loss.backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert torch.equal(after["model.encoder.embeddings.embed_tokens.weight"], before["model.encoder.embeddings.embed_tokens.weight"])
    assert not torch.equal(after["model.encoder.layers.0.feed_forward.fc1.weight"], before["model.encoder.layers.0.feed_forward.fc1.weight"])


@pytest.mark.parametrize("family", ["opus-mt base", "nllb"])
def test_the_ctranslate2_export_translates_as_ctranslate2s_own_converter_of_the_source(tmp_path, family):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from vanilla_transformer.serving import export_model, load_engine, translate
    from vanilla_transformer.serving.engines import use_languages

    source = pretrained_fixtures.checkpoint(tmp_path / "source", family)
    convert_pretrained_translator(str(source), tmp_path / "converted")
    ctranslate2.converters.TransformersConverter(str(source)).convert(str(tmp_path / "reference"))
    reference = ctranslate2.Translator(str(tmp_path / "reference"))
    tokenizer = AutoTokenizer.from_pretrained(source)
    languages = ("deu_Latn", "fra_Latn") if family == "nllb" else (None, None)
    if family == "nllb":
        tokenizer.src_lang = "deu_Latn"
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(SOURCES)["input_ids"]]
    prefix = [[languages[1]]] * len(tokens) if family == "nllb" else None
    for quantization in ("float32", "int8"):
        export_model(str(tmp_path / "converted"), "ctranslate2", str(tmp_path / quantization), quantization=quantization)
        engine, exported_tokenizer = load_engine(str(tmp_path / quantization))
        use_languages(engine, exported_tokenizer, *languages)
        expected_reference = ctranslate2.Translator(str(tmp_path / "reference"), compute_type=quantization)
        for beams in (1, 4):
            expected = [
                exported_tokenizer.decode(exported_tokenizer.convert_tokens_to_ids(r.hypotheses[0]), skip_special_tokens=True).strip()
                for r in expected_reference.translate_batch(tokens, beam_size=beams, target_prefix=prefix, max_decoding_length=20)
            ]
            ours = list(translate(engine, exported_tokenizer, SOURCES, num_beams=beams, max_new_tokens=20))
            assert ours == expected, (quantization, beams)
    del reference


def test_translate_script_needs_and_uses_nllbs_language_codes(tmp_path):
    convert_pretrained_translator(str(pretrained_fixtures.checkpoint(tmp_path / "source", "nllb")), tmp_path / "converted")
    command = [sys.executable, SCRIPTS / "translate.py", "--model", tmp_path / "converted", "--max_new_tokens", "6"]
    missing = subprocess.run(command, input="Ein Hund.\n", capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "give --source_lang and --target_lang as its tokenizer's language codes" in missing.stderr
    done = subprocess.run(command + ["--source_lang", "deu_Latn", "--target_lang", "fra_Latn", "--num_beams", "1"],
                          input="\n".join(SOURCES) + "\n", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "converted").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "converted", src_lang="deu_Latn")
    french = tokenizer.convert_tokens_to_ids("fra_Latn")
    with torch.no_grad():
        expected = [
            tokenizer.decode(model.generate(**tokenizer(s, return_tensors="pt"), forced_bos_token_id=french, num_beams=1, max_new_tokens=6)[0], skip_special_tokens=True).strip()
            for s in SOURCES
        ]
    assert done.stdout.splitlines() == expected


@pytest.mark.parametrize("family", ["opus-mt base", "nllb", "fsmt"])
def test_the_onnx_export_translates_as_the_converted_model(tmp_path, family):
    pytest.importorskip("onnxruntime")
    from vanilla_transformer.serving import export_model, load_engine, translate
    from vanilla_transformer.serving.engines import use_languages

    convert_pretrained_translator(str(pretrained_fixtures.checkpoint(tmp_path / "source", family)), tmp_path / "converted")
    export_model(str(tmp_path / "converted"), "onnx", str(tmp_path / "onnx"))
    translations = []
    for folder in ("converted", "onnx"):
        engine, tokenizer = load_engine(str(tmp_path / folder))
        use_languages(engine, tokenizer, *(("deu_Latn", "eng_Latn") if family == "nllb" else (None, None)))
        translations.append(list(translate(engine, tokenizer, SOURCES, num_beams=2, max_new_tokens=10)))
    assert translations[0] == translations[1]
    if family == "fsmt":
        with pytest.raises(ValueError, match="has separate source and target vocabularies, and the export names the tokens of one"):
            export_model(str(tmp_path / "converted"), "ctranslate2", str(tmp_path / "ct2"))
