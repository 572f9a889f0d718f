"""Translate lines with a saved or pushed model: from a file (with a progress bar) or from stdin, one translation per
line on stdout (or --output), written as soon as its batch is done.

    python scripts/translate.py --model RUN --input test.de > test.hyp.en
    echo "Ein Hund rennt durch den Schnee." | python scripts/translate.py --model RUN --num_beams 4
"""

import argparse
import sys

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.inference import translate
from vanilla_transformer.translation_data import read_lines

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved model directory or a Hub repo id (with its tokenizer)")
    parser.add_argument("--input", default="-", help="text file (plain or .gz), one sentence per line; - for stdin")
    parser.add_argument("--output", default="-", help="where translations go; - for stdout")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_beams", type=int, help="beam size (default: the model's generation config)")
    parser.add_argument("--length_penalty", type=float, help="beam search length penalty (default: the model's)")
    parser.add_argument("--max_new_tokens", type=int, help="longest translation in tokens (default: the model's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' precision (bfloat16 on recent GPUs)")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub model")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model, revision=args.revision, dtype=DTYPES[args.dtype])
    model = model.to(args.device).eval()
    generate_kwargs = {
        name: value
        for name, value in (("num_beams", args.num_beams), ("length_penalty", args.length_penalty), ("max_new_tokens", args.max_new_tokens))
        if value is not None
    }
    if args.input == "-":
        sentences = (line.rstrip("\r\n") for line in sys.stdin)
    else:
        lines = read_lines(args.input)
        sentences = tqdm(lines, desc="translating", unit="sentence", file=sys.stderr)
    # Someone typing at a terminal gets each translation at once, not after a batch of lines
    batch_size = 1 if args.input == "-" and sys.stdin.isatty() else args.batch_size
    output = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        for translation in translate(model, tokenizer, sentences, batch_size=batch_size, **generate_kwargs):
            output.write(translation + "\n")
            output.flush()
    finally:
        if output is not sys.stdout:
            output.close()


if __name__ == "__main__":
    main()
