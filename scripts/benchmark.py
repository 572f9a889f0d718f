"""Speed and memory side by side (see vanilla_transformer/benchmarking.py for what is measured and how): our model
(eager, sdpa), MarianMTModel (sdpa) with identical dimensions, and the PyTorch tutorial's nn.Transformer model.

    python scripts/benchmark.py --size tiny --threads 2 --json tiny.json
    python scripts/benchmark.py --size base --device cuda --dtype bf16
    python scripts/benchmark.py --size tiny --profile
    python scripts/benchmark.py --serving --model RUN --source test.de.gz --reference test.en.gz --json serving.json
    python scripts/benchmark.py --data --corpus ../shared/data/multi30k/train --pairs 500000 4500000 --json data.json
    python scripts/benchmark.py --server --model RUN-ct2 --source test.de.gz --langs de en --clients 32 --seconds 60
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from vanilla_transformer.analysis.benchmarking import (
    MODELS,
    SIZES,
    benchmark,
    format_serving_table,
    format_table,
    profile_generation,
    profile_training,
    serving_benchmark,
)
from vanilla_transformer.analysis.data_benchmark import data_benchmark, format_data_table

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--threads", type=int, help="CPU threads (default 2; --server: serve.py's default, torch's)")
    parser.add_argument("--parallel_batches", type=int,
                        help="--serving, --server: batches the engines translate at once, sharing --threads "
                        "(default: --serving 1, --server serve.py's default, one per thread)")
    parser.add_argument("--repeats", type=int, default=7, help="measured rounds (medians are reported; --serving: the fastest)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--json", help="write the results, with their 'ratios', to this file")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print where the time goes instead: our training step (torch profiler table), then greedy and beam-4 "
        "generation of ours and Marian side by side",
    )
    serving = parser.add_argument_group("the real workload (--serving): a trained model translating a test set")
    serving.add_argument("--serving", action="store_true", help="compare the ways to serve --model instead")
    serving.add_argument("--model", help="a trained model directory, with its tokenizer")
    serving.add_argument("--source", help="source sentences, one per line (plain or .gz)")
    serving.add_argument("--reference", help="their reference translations, for BLEU / chrF")
    serving.add_argument("--export_dir", help="where the exports go, reused when present (default: a temporary folder)")
    data = parser.add_argument_group("the data side (--data): cold and warm starts of training on a corpus of N pairs")
    data.add_argument("--data", action="store_true", help="measure the data side instead")
    data.add_argument("--corpus", help="a prefix of parallel text files (PREFIX.<lang>, plain or .gz), repeated or cut to N pairs")
    data.add_argument("--langs", nargs=2, default=["de", "en"], metavar=("SOURCE", "TARGET"))
    data.add_argument("--pairs", nargs="+", type=int, default=[500_000], help="corpus sizes to measure, in pairs")
    data.add_argument("--processes", type=int, default=1, help="also a cold start on this many processes (torchrun)")
    data.add_argument("--scratch_dir", help="where the corpora, caches and runs go (default: a temporary folder)")
    server = parser.add_argument_group("the translation server (--server): a load test of scripts/serve.py on loopback")
    server.add_argument("--server", action="store_true", help="load-test the server over --model instead (uses --source, --langs)")
    server.add_argument("--engine", default="auto", help="the server's engine for --model")
    server.add_argument("--clients", type=int, default=32, help="concurrent clients, one request each at a time")
    server.add_argument("--seconds", type=float, default=60, help="length of each phase (one client, then all)")
    server.add_argument("--port", type=int, default=8765, help="the loopback port the server listens on")
    server.add_argument("--num_beams", type=int, help="the server's beam size (default: the model's generation config)")
    args = parser.parse_args()
    if args.server:
        if not (args.model and args.source):
            parser.error("--server needs --model and --source")
        # Imported here: the server and its load test need the `server` extra, the other modes do not
        from vanilla_transformer.analysis.server_benchmark import format_server_table, serve_command, server_benchmark
        from vanilla_transformer.serving.command_line import default_parallel_batches

        args.threads = args.threads or torch.get_num_threads()
        if args.parallel_batches is None:
            args.parallel_batches = default_parallel_batches(args.threads, "cpu")

        serve_script = str(Path(__file__).resolve().parent / "serve.py")
        command = serve_command(serve_script, args.model, args.engine, tuple(args.langs), args.port, args.threads,
                                args.parallel_batches, args.num_beams)
        summary = server_benchmark(command, args.model, args.engine, args.source, tuple(args.langs), args.port,
                                   args.clients, args.seconds, args.threads, args.parallel_batches, args.num_beams)
        print(format_server_table([summary]))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(summary, handle, indent=2)
        return
    if args.data:
        if not args.corpus:
            parser.error("--data needs --corpus")
        with tempfile.TemporaryDirectory() as scratch:
            summary = data_benchmark(args.corpus, tuple(args.langs), args.pairs, Path(args.scratch_dir or scratch), args.processes)
        print(format_data_table(summary))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(summary, handle, indent=2)
        return
    args.threads = args.threads or 2
    if args.parallel_batches is None:
        args.parallel_batches = 1
    if args.serving:
        if not (args.model and args.source and args.reference):
            parser.error("--serving needs --model, --source and --reference")
        with tempfile.TemporaryDirectory() as scratch:
            # transformers.js in Node too, where the tests' install of it is (npm ci --prefix tests/web)
            script = Path(__file__).resolve().parent.parent / "tests" / "web" / "translate.mjs"
            node = shutil.which("node") and (script.parent / "node_modules" / "@huggingface" / "transformers").is_dir()
            summary = serving_benchmark(args.model, args.source, args.reference, args.export_dir or scratch, args.threads,
                                        repeats=args.repeats, transformers_js_script=str(script) if node else None,
                                        parallel_batches=args.parallel_batches)
        print(format_serving_table(summary))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(summary, handle, indent=2)
        return
    if args.profile:
        print(profile_training(args.size, args.device, DTYPES[args.dtype], args.threads))
        for num_beams in (1, 4):
            print(profile_generation(args.size, args.device, DTYPES[args.dtype], args.threads, num_beams))
        return
    summary = benchmark(args.size, args.device, DTYPES[args.dtype], args.threads, args.repeats, args.warmup, args.models)
    print(format_table(summary))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
