"""A joint (source + target) BPE tokenizer, as the paper uses (section 5.1: "a shared source-target vocabulary of
about 37000 tokens"), built with `tokenizers` and saved as a `PreTrainedTokenizerFast` that `AutoTokenizer` loads."""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedConfig, PreTrainedTokenizerBase, PreTrainedTokenizerFast

# Their ids are 0, 1, 2, 3 in this order: the defaults of VanillaTransformerConfig's pad/bos/eos token ids
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Learns a byte-level BPE vocabulary of `vocab_size` tokens (specials included) from `texts`.

    Byte-level, so every text is encoded without <unk> and decodes back to itself (after Unicode NFC normalization:
    "ü" typed as u + combining diaeresis comes back as the single character). Every encoded text ends with </s>, so
    `tokenizer(source, text_target=target)` gives model inputs and labels; the decoder's start token <s> is added by
    the model when it shifts the labels right.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must leave room beyond the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}.")
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.NFC()
    # Digits one by one: numbers are then copied or read digit by digit, not through arbitrary merges like "760"
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    eos = SPECIAL_TOKENS["eos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tokenizer.token_to_id(eos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def check_tokenizer_matches_config(tokenizer: PreTrainedTokenizerBase, config: PreTrainedConfig) -> None:
    """Refuses a tokenizer whose special tokens or vocabulary disagree with the model's config: training with one
    would silently learn the wrong padding or end of sentence."""
    problems = []
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        ours, theirs = getattr(config, name), getattr(tokenizer, name)
        if theirs is not None and ours != theirs:
            problems.append(f"{name}: tokenizer {theirs}, config {ours}")
    target_vocab = getattr(config, "decoder_vocab_size", None) or config.vocab_size
    # A tokenizer with a target vocabulary of its own (FSMT's) is checked side by side; one vocabulary fits both sides
    source_tokens = len(tokenizer)
    target_tokens = getattr(tokenizer, "tgt_vocab_size", source_tokens)
    sizes = (source_tokens, config.vocab_size), (target_tokens, target_vocab)
    if target_tokens == source_tokens:
        sizes = ((source_tokens, min(config.vocab_size, target_vocab)),)
    for tokens, embedded in sizes:
        if tokens > embedded:
            problems.append(f"vocabulary: tokenizer has {tokens} tokens, model has {embedded}")
    if problems:
        raise ValueError(
            "The tokenizer does not match the model config (" + "; ".join(problems) + "). Use the tokenizer the "
            "model was trained with, or build the config from this tokenizer (vocab_size=len(tokenizer) and its "
            "special token ids)."
        )


def is_multilingual(tokenizer: PreTrainedTokenizerBase) -> bool:
    """NLLB's and M2M100's tokenizers: one model for many languages, each sentence tagged with its language's code."""
    # FSMT's tokenizer names its two languages too, but has no codes to switch
    return hasattr(tokenizer, "set_src_lang_special_tokens") and hasattr(tokenizer, "tgt_lang")


def language_code_id(tokenizer: PreTrainedTokenizerBase, code: str) -> int:
    """The token id of a language code of a multilingual tokenizer ("deu_Latn" for NLLB, "de" for M2M100)."""
    if hasattr(tokenizer, "get_lang_id"):  # M2M100Tokenizer keeps its codes apart, as __de__
        token_id = tokenizer.lang_code_to_id.get(code)
    else:
        token_id = tokenizer.convert_tokens_to_ids(code)
        token_id = None if token_id == tokenizer.unk_token_id else token_id
    if token_id is None:
        codes = sorted(getattr(tokenizer, "lang_code_to_id", None) or map(str, tokenizer.extra_special_tokens))
        raise ValueError(
            f"{code!r} is not a language code of this {type(tokenizer).__name__}: give the language as one of its "
            f"{len(codes)} codes, e.g. {', '.join(codes[:4])} ..."
        )
    return token_id


def use_language_codes(tokenizer: PreTrainedTokenizerBase, generation_config, source_lang: str, target_lang: str) -> None:
    """Tags sources with `source_lang`'s code and targets with `target_lang`'s, and makes that code the first
    generated token (`forced_bos_token_id`), as transformers' example `run_translation.py` does for NLLB and M2M100.
    A tokenizer of one language pair is left as it is."""
    if not is_multilingual(tokenizer):
        return
    language_code_id(tokenizer, source_lang)
    generation_config.forced_bos_token_id = language_code_id(tokenizer, target_lang)
    tokenizer.src_lang, tokenizer.tgt_lang = source_lang, target_lang
