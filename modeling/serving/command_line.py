"""The command-line flags that `scripts/translate.py` and `scripts/serve.py` share: which model and engine, how to
batch, how to decode; and loading the engine they name."""

import argparse

import torch

from .engines import ENGINES, load_engine

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a saved or exported model directory, or a Hub repo id")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="auto: the engine an exported folder was made for, else torch")
    parser.add_argument("--batch_size", type=int, default=64, help="most sentences in one batch")
    parser.add_argument("--max_tokens_per_batch", type=int, default=2048, help="most source tokens in one batch, padding included")
    parser.add_argument("--num_beams", type=int, help="beam size (default: the model's generation config)")
    parser.add_argument("--length_penalty", type=float, help="beam search length penalty (default: the model's)")
    parser.add_argument("--max_new_tokens", type=int, help="longest translation in tokens (default: the model's)")
    parser.add_argument("--max_source_length", type=int, help="longer sources are cut to this many tokens (default: the model's positions)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="torch engine: weights' precision")
    parser.add_argument("--threads", type=int, help="CPU threads of the engine (default: torch's)")
    parser.add_argument("--parallel_batches", type=int,
                        help="batches translated at once, sharing --threads between them (at least one each; default: "
                        "on a CPU one per thread, on a GPU 1)")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub model")


def default_parallel_batches(threads: int | None, device: str) -> int:
    """On a CPU one batch at a time per thread, each on a thread of its own: a batch's small decoding steps cannot keep
    several threads busy. On the project's 2-core machine two batches of a thread each translated a file 1.5-2.3x
    faster than one batch on both threads, one sentence at a time (someone typing) up to 10x faster with
    CTranslate2, and a server's 32 clients got 1.9x the sentences/s (docs/performance.md). On a GPU one, which
    batches within it."""
    return (threads or torch.get_num_threads()) if device.startswith("cpu") else 1


def load_engine_from_arguments(args: argparse.Namespace):
    """(engine, tokenizer) for the flags above, `args.parallel_batches` filled in when not given; OSError or
    ValueError names what is wrong with them."""
    if args.parallel_batches is None:
        args.parallel_batches = default_parallel_batches(args.threads, args.device)
    return load_engine(args.model, args.engine, args.device, DTYPES[args.dtype], args.revision, args.threads,
                       args.parallel_batches)
