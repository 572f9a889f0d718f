"""Speed and memory, one subcommand per thing measured; each prints ratios against a reference run in the same process
or the same run (see the module named in each subcommand's help for what is measured and how):

    python scripts/benchmark.py model --size tiny --threads 2 --json tiny.json
    python scripts/benchmark.py model --size base --device cuda --dtype bf16
    python scripts/benchmark.py model --size tiny --profile
    python scripts/benchmark.py model --size opus-mt-base --layout opus-mt   # a converted opus-mt against MarianMTModel
    python scripts/benchmark.py recipe --corpus ../shared/data/multi30k/train --dtype bf16 --attn_implementation eager
    python scripts/benchmark.py serving --model RUN --source test.de.gz --reference test.en.gz --json serving.json
    python scripts/benchmark.py data --corpus ../shared/data/multi30k/train --pairs 500000 4500000 --json data.json
    python scripts/benchmark.py data --corpus ../shared/data/multi30k/train --pairs 29000 --tokenizers opus-mt-de-en
    python scripts/benchmark.py server --model RUN-ct2 --source test.de.gz --langs de en --clients 32 --seconds 60
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_benchmark(args) -> dict | None:
    from vanilla_transformer.analysis.benchmarking import benchmark, format_table, profile_generation, profile_training

    if args.profile:
        print(profile_training(args.size, args.device, DTYPES[args.dtype], args.threads))
        for num_beams in (1, 4):
            print(profile_generation(args.size, args.device, DTYPES[args.dtype], args.threads, num_beams))
        return None
    summary = benchmark(args.size, args.device, DTYPES[args.dtype], args.threads, args.repeats, args.warmup, args.models, args.layout)
    print(format_table(summary))
    return summary


def recipe_benchmark(args) -> dict:
    from vanilla_transformer.analysis.recipe_benchmark import format_recipe_table, recipe_benchmark

    if args.dtype == "fp16":
        raise SystemExit("recipe: --dtype fp32 or bf16 (the README's recipe); fp16 needs a GPU's loss scaling")
    summary = recipe_benchmark(args.corpus, tuple(args.langs), args.steps, args.rounds, args.threads,
                               args.dtype == "bf16", args.attn_implementation)
    print(format_recipe_table(summary))
    return summary


def serving_benchmark(args) -> dict:
    from vanilla_transformer.analysis.serving_benchmark import format_serving_table, serving_benchmark

    with tempfile.TemporaryDirectory() as scratch:
        # transformers.js in Node too, where the tests' install of it is (npm ci --prefix tests/web)
        script = Path(__file__).resolve().parent.parent / "tests" / "web" / "translate.mjs"
        node = shutil.which("node") and (script.parent / "node_modules" / "@huggingface" / "transformers").is_dir()
        summary = serving_benchmark(args.model, args.source, args.reference, args.export_dir or scratch, args.threads,
                                    repeats=args.repeats, transformers_js_script=str(script) if node else None,
                                    parallel_batches=args.parallel_batches)
    print(format_serving_table(summary))
    return summary


def data_benchmark(args) -> dict:
    from vanilla_transformer.analysis.data_benchmark import (
        data_benchmark,
        format_data_table,
        format_tokenizer_table,
        tokenizer_throughput,
    )

    with tempfile.TemporaryDirectory() as scratch:
        if args.tokenizers:
            rows = tokenizer_throughput(args.corpus, tuple(args.langs), args.tokenizers, args.pairs[0], Path(args.scratch_dir or scratch))
            print(format_tokenizer_table(rows))
            return {"source": args.corpus, "langs": args.langs, "tokenizers": rows}
        summary = data_benchmark(args.corpus, tuple(args.langs), args.pairs, Path(args.scratch_dir or scratch), args.processes)
    print(format_data_table(summary))
    return summary


def server_benchmark(args) -> dict:
    # Imported here: the server and its load test need the `server` extra, the other modes do not
    from vanilla_transformer.analysis.server_benchmark import format_server_table, serve_command, server_benchmark
    from vanilla_transformer.serving.command_line import default_parallel_batches

    threads = args.threads or torch.get_num_threads()
    parallel_batches = args.parallel_batches or default_parallel_batches(threads, "cpu")
    serve_script = str(Path(__file__).resolve().parent / "serve.py")
    command = serve_command(serve_script, args.model, args.engine, tuple(args.langs), args.port, threads,
                            parallel_batches, args.num_beams)
    summary = server_benchmark(command, args.model, args.engine, args.source, tuple(args.langs), args.port,
                               args.clients, args.seconds, threads, parallel_batches, args.num_beams)
    print(format_server_table([summary]))
    return summary


def parser() -> argparse.ArgumentParser:
    from vanilla_transformer.analysis.benchmarking import LAYOUTS, MODELS, SIZES

    main = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = main.add_subparsers(dest="mode", required=True, metavar="MODE")

    def mode(name: str, run, help: str) -> argparse.ArgumentParser:
        sub = modes.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        sub.add_argument("--json", help="write the results, with their ratios, to this file")
        return sub

    def dtype(sub: argparse.ArgumentParser, default: str = "fp32"):
        sub.add_argument("--dtype", choices=DTYPES, default=default, help=f"training precision (default {default})")

    model = mode("model", model_benchmark, "ours (eager, sdpa) against MarianMTModel (sdpa) of identical dimensions and "
                 "the PyTorch tutorial's nn.Transformer: training, generation, peak memory, MFU "
                 "(vanilla_transformer/analysis/benchmarking.py)")
    model.add_argument("--size", choices=SIZES, default="tiny")
    model.add_argument("--device", default="cpu")
    dtype(model)
    model.add_argument("--threads", type=int, default=2, help="CPU threads")
    model.add_argument("--repeats", type=int, default=7, help="measured rounds (medians are reported)")
    model.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first")
    model.add_argument("--layout", choices=LAYOUTS, default="paper",
                       help="paper: ours against MarianMTModel and the tutorial; opus-mt / m2m100: a pretrained family's "
                       "layout in its transformers class against ours converted from it")
    model.add_argument("--models", nargs="+", choices=MODELS, help="default: ours and the layout's reference")
    model.add_argument("--profile", action="store_true",
                       help="print where the time goes instead: our training step (torch profiler table), then greedy "
                       "and beam-4 generation of ours and Marian side by side")

    recipe = mode("recipe", recipe_benchmark, "the README's training recipe through the Trainer: label smoothing by "
                  "the Trainer's smoother against the model's own loss, steps/s (analysis/recipe_benchmark.py)")
    recipe.add_argument("--corpus", required=True, help="a prefix of parallel text files (PREFIX.<lang>, plain or .gz)")
    recipe.add_argument("--langs", nargs=2, default=["de", "en"], metavar=("SOURCE", "TARGET"))
    dtype(recipe)
    recipe.add_argument("--attn_implementation", default="sdpa", help="'sdpa' or 'eager'")
    recipe.add_argument("--steps", type=int, default=40, help="optimizer steps per round (the first two unmeasured)")
    recipe.add_argument("--rounds", type=int, default=3, help="alternating rounds per loss path (medians reported)")
    recipe.add_argument("--threads", type=int, default=2, help="CPU threads")

    serving = mode("serving", serving_benchmark, "a trained model translating a test set with every engine against "
                   "translate() on PyTorch (analysis/serving_benchmark.py)")
    serving.add_argument("--model", required=True, help="a trained model directory, with its tokenizer")
    serving.add_argument("--source", required=True, help="source sentences, one per line (plain or .gz)")
    serving.add_argument("--reference", required=True, help="their reference translations, for BLEU / chrF")
    serving.add_argument("--export_dir", help="where the exports go, reused when present (default: a temporary folder)")
    serving.add_argument("--threads", type=int, default=2, help="CPU threads")
    serving.add_argument("--parallel_batches", type=int, default=1, help="batches the engines translate at once, "
                         "sharing --threads")
    serving.add_argument("--repeats", type=int, default=7, help="measured rounds (the fastest is reported)")

    data = mode("data", data_benchmark, "cold and warm starts of training on a corpus of N pairs "
                "(analysis/data_benchmark.py)")
    data.add_argument("--corpus", required=True, help="a prefix of parallel text files (PREFIX.<lang>, plain or .gz), "
                      "repeated or cut to N pairs")
    data.add_argument("--langs", nargs=2, default=["de", "en"], metavar=("SOURCE", "TARGET"))
    data.add_argument("--pairs", nargs="+", type=int, default=[500_000], help="corpus sizes to measure, in pairs")
    data.add_argument("--tokenizers", nargs="+", help="instead: the tokenize-once pairs/s of these saved tokenizers "
                      "(folders or Hub ids, e.g. converted translators), in one process and one per core")
    data.add_argument("--processes", type=int, default=1, help="also a cold start on this many processes (torchrun)")
    data.add_argument("--scratch_dir", help="where the corpora, caches and runs go (default: a temporary folder)")

    server = mode("server", server_benchmark, "a load test of scripts/serve.py over --model on loopback "
                  "(analysis/server_benchmark.py)")
    server.add_argument("--model", required=True, help="a model directory or export that serve.py serves")
    server.add_argument("--source", required=True, help="the sentences the clients send, one per line")
    server.add_argument("--langs", nargs=2, default=["de", "en"], metavar=("SOURCE", "TARGET"))
    server.add_argument("--engine", default="auto", help="the server's engine for --model")
    server.add_argument("--threads", type=int, help="the server's threads (default: serve.py's, torch's)")
    server.add_argument("--parallel_batches", type=int, help="waves the server translates at once (default: "
                        "serve.py's, one per thread)")
    server.add_argument("--clients", type=int, default=32, help="concurrent clients, one request each at a time")
    server.add_argument("--seconds", type=float, default=60, help="length of each phase (one client, then all)")
    server.add_argument("--port", type=int, default=8765, help="the loopback port the server listens on")
    server.add_argument("--num_beams", type=int, help="the server's beam size (default: the model's generation config)")
    return main


def main():
    args = parser().parse_args()
    summary = args.run(args)
    if args.json and summary is not None:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
