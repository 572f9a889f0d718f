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
