"""Quick start: train a tokenizer and a small Transformer, save them, reload them through the Auto classes and
translate held-out sentences. The last line printed is the exact-match score.

    python scripts/quickstart.py                          # no data needed: digits -> English words, a few minutes
    python scripts/quickstart.py --data_dir ../shared/data/multi30k --source_lang de --target_lang en
"""

import argparse

from vanilla_transformer.recipes.quickstart import run_quickstart
from vanilla_transformer.training import log_progress_to_stderr, use_cpu_when_no_accelerator


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", help="folder of parallel text: train*, val*/dev*, test* files per language")
    parser.add_argument("--source_lang", default="de", help="with --data_dir: the source language's file suffix")
    parser.add_argument("--target_lang", default="en", help="with --data_dir: the target language's file suffix")
    parser.add_argument("--output_dir", default="quickstart-model", help="where the model and tokenizer are saved")
    parser.add_argument("--max_steps", type=int, help="training steps (default: the recipe's)")
    args = parser.parse_args()
    use_cpu_when_no_accelerator()
    log_progress_to_stderr()
    run_quickstart(args.output_dir, args.data_dir, args.source_lang, args.target_lang, args.max_steps)


if __name__ == "__main__":
    main()
