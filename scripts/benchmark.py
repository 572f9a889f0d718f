"""Speed and memory side by side (see vanilla_transformer/benchmarking.py for what is measured and how): our model
(eager, sdpa), MarianMTModel (sdpa) with identical dimensions, and the PyTorch tutorial's nn.Transformer model.

    python scripts/benchmark.py --size tiny --threads 2 --json tiny.json
    python scripts/benchmark.py --size base --device cuda --dtype bf16
    python scripts/benchmark.py --size tiny --profile
"""

import argparse
import json

import torch

from vanilla_transformer.benchmarking import (
    MODELS,
    SIZES,
    benchmark,
    format_table,
    profile_generation,
    profile_training,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=7, help="measured rounds (medians are reported)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--json", help="write the results, with their 'ratios', to this file")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print where the time goes instead: our training step (torch profiler table), then greedy and beam-4 "
        "generation of ours and Marian side by side",
    )
    args = parser.parse_args()
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
