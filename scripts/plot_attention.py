"""Draw what a model attends to: encoder self-attention, decoder masked self-attention and cross-attention, per layer
and head, labelled with the tokens, plus the head-averaged cross-attention (the alignment picture).

    python scripts/plot_attention.py --model RUN_OR_REPO --source "Ein Hund rennt durch den Schnee." --output_dir att
    python scripts/plot_attention.py --model RUN --source "..." --target "A dog runs through the snow." --output_dir att
"""

import argparse

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from vanilla_transformer.analysis.attention_maps import attention_maps
from vanilla_transformer.analysis.plotting import plot_attention_maps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved model directory or a Hub repo id (with its tokenizer)")
    parser.add_argument("--source", required=True, help="the sentence to translate")
    parser.add_argument("--target", help="a translation to attend along (default: the model's own translation)")
    parser.add_argument("--output_dir", required=True, help="where the PNG files go")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub model")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model, revision=args.revision).eval()
    maps = attention_maps(model, tokenizer, args.source, args.target)
    files = plot_attention_maps(maps, args.output_dir)
    print("translation tokens:", " ".join(maps.target_tokens))
    print(f"wrote {len(files)} pictures to {args.output_dir}")


if __name__ == "__main__":
    main()
