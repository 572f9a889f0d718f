"""Average the weights of the last N checkpoints of a run into one loadable model, as the paper does (the last 5
for base models, 20 for big ones). The tokenizer of the newest checkpoint is saved beside it.

    python scripts/average_checkpoints.py --run_dir RUN --last 5 --output_dir RUN/averaged
    python scripts/average_checkpoints.py --checkpoints RUN/checkpoint-800 RUN/checkpoint-1000 --output_dir AVG
"""

import argparse
from pathlib import Path

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from transformers import AutoTokenizer
from vanilla_transformer.training.checkpoint_averaging import average_checkpoints, last_checkpoints


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run_dir", help="a Trainer --output_dir holding checkpoint-<step> directories")
    source.add_argument("--checkpoints", nargs="+", help="the checkpoint directories to average")
    parser.add_argument("--last", type=int, default=5, help="with --run_dir: how many of the latest checkpoints")
    parser.add_argument("--output_dir", required=True, help="where the averaged model is saved")
    args = parser.parse_args()

    checkpoints = [Path(p) for p in args.checkpoints] if args.checkpoints else last_checkpoints(args.run_dir, args.last)
    if Path(args.output_dir).resolve() in {c.resolve() for c in checkpoints}:
        parser.error("--output_dir must not be one of the checkpoints: averaging would overwrite its weights.")
    model = average_checkpoints(checkpoints)
    model.save_pretrained(args.output_dir)
    if (checkpoints[-1] / "tokenizer_config.json").is_file():
        AutoTokenizer.from_pretrained(checkpoints[-1]).save_pretrained(args.output_dir)
    print(f"averaged {len(checkpoints)} checkpoints ({', '.join(c.name for c in checkpoints)}) into {args.output_dir}")


if __name__ == "__main__":
    main()
