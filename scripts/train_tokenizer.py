"""Train a joint source/target byte-level BPE tokenizer on text files, or on the training split of a `datasets`
translation dataset, and save it for `AutoTokenizer`.

    python scripts/train_tokenizer.py --files DATA/train.de.gz DATA/train.en.gz --vocab_size 8000 --output_dir TOK
    python scripts/train_tokenizer.py --dataset_name wmt/wmt14 --dataset_config_name de-en --langs en de \
        --vocab_size 37000 --output_dir TOK
"""

import argparse
from itertools import chain

import datasets
from vanilla_transformer.data.tokenization import train_bpe_tokenizer
from vanilla_transformer.data.translation_data import hub_split_records, iter_lines, translation_texts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--files", nargs="+", help="text files, plain or .gz, one sentence per line")
    source.add_argument("--dataset_name", help="a translation dataset of the Hub (or a local folder laid out as one)")
    parser.add_argument("--dataset_config_name", help="the dataset's configuration, e.g. de-en")
    parser.add_argument("--langs", nargs=2, metavar=("SOURCE", "TARGET"), help="with --dataset_name: the two language keys")
    parser.add_argument("--vocab_size", type=int, default=8000, help="tokens in the vocabulary, specials included")
    parser.add_argument("--min_frequency", type=int, default=2, help="merges seen fewer times are not learned")
    parser.add_argument("--output_dir", required=True, help="where the tokenizer is saved")
    args = parser.parse_args()

    # Streamed: a corpus of millions of lines is counted by the tokenizers library, never held as a list
    if args.files:
        texts, origin = chain.from_iterable(iter_lines(path) for path in args.files), " ".join(args.files)
    else:
        if not args.langs:
            parser.error("--dataset_name needs --langs SOURCE TARGET")
        train = datasets.load_dataset(args.dataset_name, args.dataset_config_name, split="train")
        texts = translation_texts(hub_split_records(train, args.dataset_name, args.dataset_config_name, "train", *args.langs))
        origin = f"the train split of {args.dataset_name}"
    tokenizer = train_bpe_tokenizer(texts, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    tokenizer.save_pretrained(args.output_dir)
    print(f"{len(tokenizer)} tokens learned from {origin}; saved to {args.output_dir}")


if __name__ == "__main__":
    main()
