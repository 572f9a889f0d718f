"""Train a joint source/target byte-level BPE tokenizer on text files and save it for `AutoTokenizer`.

    python scripts/train_tokenizer.py --files DATA/train.de.gz DATA/train.en.gz --vocab_size 8000 --output_dir TOK
"""

import argparse

from vanilla_transformer.data.tokenization import train_bpe_tokenizer
from vanilla_transformer.data.translation_data import read_lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", required=True, help="text files, plain or .gz, one sentence per line")
    parser.add_argument("--vocab_size", type=int, default=8000, help="tokens in the vocabulary, specials included")
    parser.add_argument("--min_frequency", type=int, default=2, help="merges seen fewer times are not learned")
    parser.add_argument("--output_dir", required=True, help="where the tokenizer is saved")
    args = parser.parse_args()

    texts = [line for path in args.files for line in read_lines(path)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    tokenizer.save_pretrained(args.output_dir)
    print(f"{len(tokenizer)} tokens learned from {len(texts)} lines; saved to {args.output_dir}")


if __name__ == "__main__":
    main()
