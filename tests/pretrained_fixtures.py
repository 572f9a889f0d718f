"""Small checkpoints of the pretrained families (opus-mt, NLLB, M2M100, FSMT), built with transformers' own classes
and the published checkpoints' settings (activation, normalization, special ids, tying, generation config), with
random weights and tokenizers trained here on a few sentences: no real weights can be downloaded in the tests."""

import json
import random
from pathlib import Path

import torch

WORDS = (
    "a man woman dog child in on the with blue red green shirt street water ball plays stands runs sits two three "
    "people group near is are of at ein eine mann frau hund kind auf der die das mit blauen roten hemd strasse "
    "wasser spielt steht zwei drei leute gruppe neben ist sind von bei und"
).split()


def sentences(count: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))).capitalize() + "." for _ in range(count)]


def train_sentencepiece(folder: Path, name: str, model_type: str, vocab_size: int = 120) -> Path:
    import sentencepiece

    text = folder / f"{name}.txt"
    text.write_text("\n".join(sentences()) + "\n")
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / name), vocab_size=vocab_size, model_type=model_type,
        character_coverage=1.0, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, minloglevel=2,
    )
    text.unlink()
    (folder / f"{name}.vocab").unlink()
    return folder / f"{name}.model"


# The published layouts, scaled down: (d_model, encoder layers, decoder layers, heads, ffn) and the family switches
MARIAN_LAYOUTS = {
    # Helsinki-NLP/opus-mt-de-en: d 512, 6 + 6, swish; eos 0, pad (= decoder start) the last id
    "opus-mt base": dict(d_model=32, encoder_layers=2, decoder_layers=2, activation_function="swish", eos_at=0),
    # opus-mt-tc-big-*: d 1024, relu, eos not 0
    "tc-big": dict(d_model=48, encoder_layers=2, decoder_layers=2, activation_function="relu", eos_at=7),
    # the "tiny" student models: d 256, 6 encoder layers, 2 decoder layers
    "tiny": dict(d_model=16, encoder_layers=3, decoder_layers=1, activation_function="relu", eos_at=0),
}


def marian_checkpoint(folder: Path, layout: str = "opus-mt base", seed: int = 0) -> Path:
    """A MarianMTModel + MarianTokenizer folder as opus-mt publishes them (source.spm, target.spm, vocab.json)."""
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    settings = dict(MARIAN_LAYOUTS[layout])
    eos_at = settings.pop("eos_at")
    folder.mkdir(parents=True, exist_ok=True)
    spm = train_sentencepiece(folder, "source", "unigram")
    (folder / "target.spm").write_bytes(spm.read_bytes())
    spm.rename(folder / "source.spm")
    import sentencepiece

    pieces = [p for p in (sentencepiece.SentencePieceProcessor(model_file=str(folder / "source.spm")).id_to_piece(i) for i in range(120)) if p != "<unk>"]
    vocab = pieces[:eos_at] + ["</s>", "<unk>"] + pieces[eos_at:] + ["<pad>"]
    (folder / "vocab.json").write_text(json.dumps({piece: i for i, piece in enumerate(vocab)}))
    tokenizer = MarianTokenizer(
        str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json"), source_lang="de",
        target_lang="en",
    )
    tokenizer.save_pretrained(folder)
    pad, eos = len(vocab) - 1, vocab.index("</s>")
    d_model = settings.pop("d_model")
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(vocab), d_model=d_model, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model, max_position_embeddings=64, scale_embedding=True,
        pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=eos, **settings,
    )
    model = MarianMTModel(config)
    with torch.no_grad():
        model.final_logits_bias.normal_(std=0.5)  # trained in opus-mt: not zero
    model.generation_config = GenerationConfig(
        bad_words_ids=[[pad]], bos_token_id=0, decoder_start_token_id=pad, eos_token_id=eos, forced_eos_token_id=eos,
        max_length=64, num_beams=4, pad_token_id=pad, renormalize_logits=True,
    )
    model.save_pretrained(folder)
    return folder


NLLB_CODES = ["eng_Latn", "deu_Latn", "fra_Latn"]


def nllb_tokenizer(folder: Path):
    """An NllbTokenizer (tokenizers' BPE, as the Hub's tokenizer.json) over a vocabulary trained here, with the
    published language codes (all of them: the codes are part of the vocabulary)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import NllbTokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.train_from_iterator(sentences(), trainers.BpeTrainer(vocab_size=150, special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    state = json.loads(bpe.to_str())["model"]
    tokenizer = NllbTokenizer(vocab=state["vocab"], merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]], src_lang="deu_Latn", tgt_lang="eng_Latn")
    tokenizer.save_pretrained(folder)
    return tokenizer


def m2m100_checkpoint(folder: Path, layout: str = "nllb", seed: int = 0) -> Path:
    """An M2M100ForConditionalGeneration folder with NLLB-200's settings (pre-LN with a final LayerNorm, relu,
    scaled embeddings, eos as the decoder start) and its tokenizer: NllbTokenizer for "nllb", the sentencepiece
    M2M100Tokenizer for "m2m100"."""
    from transformers import GenerationConfig, M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if layout == "nllb":
        tokenizer = nllb_tokenizer(folder)
    else:
        spm = train_sentencepiece(folder, "sentencepiece.bpe", "bpe")
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor(model_file=str(spm))
        pieces = ["<s>", "<pad>", "</s>", "<unk>"] + [processor.id_to_piece(i) for i in range(1, processor.get_piece_size())]
        (folder / "vocab.json").write_text(json.dumps({piece: i for i, piece in enumerate(pieces)}))
        tokenizer = M2M100Tokenizer(str(folder / "vocab.json"), str(spm), src_lang="de", tgt_lang="en")
        tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = M2M100Config(
        # as published: the vocabulary, then the language codes, then 8 "made-up words" (M2M100) or <mask> (NLLB)
        vocab_size=max([*tokenizer.get_vocab().values(), *getattr(tokenizer, "lang_code_to_id", {}).values()]) + 9,
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, scale_embedding=True, dropout=0.1, attention_dropout=0.1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
    )
    model = M2M100ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=0, decoder_start_token_id=2, eos_token_id=2, pad_token_id=1, max_length=64, num_beams=4,
        early_stopping=True,
    )
    model.save_pretrained(folder)
    return folder


def fsmt_checkpoint(folder: Path, seed: int = 0) -> Path:
    """An FSMTForConditionalGeneration folder as facebook/wmt19-de-en publishes it: separate source and target
    vocabularies (Moses + BPE), fairseq's sinusoids, post-LN, an output projection of its own."""
    from transformers import FSMTConfig, FSMTForConditionalGeneration, FSMTTokenizer, GenerationConfig

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    letters = sorted({c for s in sentences() for c in s.lower() if not c.isspace()})
    for name, extra in (("vocab-src.json", ["ei", "en"]), ("vocab-tgt.json", ["th", "an", "in"])):
        tokens = specials + letters + [c.upper() for c in letters if c.isalpha()] + [f"{c}</w>" for c in letters] + extra
        (folder / name).write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = FSMTTokenizer(
        langs=["de", "en"], src_vocab_file=str(folder / "vocab-src.json"), tgt_vocab_file=str(folder / "vocab-tgt.json"),
        merges_file=str(folder / "merges.txt"),
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = FSMTConfig(
        langs=["de", "en"], src_vocab_size=tokenizer.src_vocab_size, tgt_vocab_size=tokenizer.tgt_vocab_size,
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, tie_word_embeddings=False,
    )
    model = FSMTForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=0, decoder_start_token_id=2, eos_token_id=2, forced_eos_token_id=2, pad_token_id=1, max_length=64,
        num_beams=5,
    )
    model.save_pretrained(folder)
    return folder


def checkpoint(folder: Path, family: str) -> Path:
    """The source folder of one family layout: "opus-mt base", "tc-big", "tiny", "nllb", "m2m100" or "fsmt"."""
    if family in MARIAN_LAYOUTS:
        return marian_checkpoint(folder, family)
    if family in ("nllb", "m2m100"):
        return m2m100_checkpoint(folder, family)
    return fsmt_checkpoint(folder)
