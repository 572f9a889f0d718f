import atexit
import os
import shutil
import tempfile

# The corpora that the tests' training runs tokenize are cached in a folder of this session, not in the user's cache
if "HF_DATASETS_CACHE" not in os.environ:
    os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="vanilla-transformer-tests-")
    atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], ignore_errors=True)

# Under pytest-xdist each worker gets its share of the cores (oversubscribed OpenMP threads spin against each other).
# Set before torch is imported, so that the processes the tests start, which inherit it, compute exactly as the
# in-process references they are compared with bit for bit.
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // int(workers))))

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from vanilla_transformer import VanillaTransformerConfig
from vanilla_transformer.data.tokenization import train_bpe_tokenizer

PAD = 0


def tiny_config(**overrides) -> VanillaTransformerConfig:
    """A model small enough to run every property test in well under a second on a CPU."""
    values = dict(
        vocab_size=40,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    values.update(overrides)
    return VanillaTransformerConfig(**values)


def tiny_model(attn_implementation: str = "sdpa", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    return AutoModelForSeq2SeqLM.from_config(config, attn_implementation=attn_implementation).eval()


def padded_batch(lengths, max_length=None, vocab_size=40, seed=0):
    """Token ids (never a special id) right-padded with PAD to `max_length`, and the matching attention mask."""
    generator = torch.Generator().manual_seed(seed)
    max_length = max_length or max(lengths)
    ids = torch.randint(3, vocab_size, (len(lengths), max_length), generator=generator)
    mask = torch.arange(max_length)[None, :] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, PAD), mask.long()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Real-looking sentences with umlauts, typographic quotes, dashes, digits and runs of spaces
GERMAN = [
    "Zwei junge Männer, die „draußen“ spielen — 3,5 Äpfel!",
    "Ein Mädchen in einem rosa Kleid klettert über die Straße.",
    "Größere Hunde laufen   durch den Schnee (im Jahr 2016).",
]
ENGLISH = ["Two young men playing outside - 3.5 apples!", "A girl in a pink dress climbs over the road.", "Bigger dogs run through the snow (in 2016)."]


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """A small joint BPE tokenizer trained on the sentences above, loaded back through AutoTokenizer."""
    folder = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer((GERMAN + ENGLISH) * 20, vocab_size=300).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)
