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
    if len(tokenizer) > min(config.vocab_size, target_vocab):
        problems.append(f"vocabulary: tokenizer has {len(tokenizer)} tokens, model has {min(config.vocab_size, target_vocab)}")
    if problems:
        raise ValueError(
            "The tokenizer does not match the model config (" + "; ".join(problems) + "). Use the tokenizer the "
            "model was trained with, or build the config from this tokenizer (vocab_size=len(tokenizer) and its "
            "special token ids)."
        )
