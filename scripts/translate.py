"""Translate lines with a saved, pushed or exported model: from a file (with a progress bar) or from stdin, one
translation per input line on stdout (or --output), in input order, whatever the lines hold.

    python scripts/translate.py --model RUN --input test.de > test.hyp.en
    python scripts/translate.py --model RUN-ct2 --input test.de --num_beams 4   # an exported folder: its engine
    echo "Ein Hund rennt durch den Schnee." | python scripts/translate.py --model RUN
    python scripts/translate.py --model nllb-600M --source_lang deu_Latn --target_lang eng_Latn --input test.de

An empty line gives an empty line; a line longer than the model's positions (or --max_source_length) is cut, with a
warning naming its line; input that is not UTF-8 stops with an error naming its line, after the lines before it are
written; a line that fails to translate gives an empty line and an error naming it, and the exit status is 1.
"""

import argparse
import gzip
import logging
import sys

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging
from vanilla_transformer.serving import translate
from vanilla_transformer.serving.command_line import add_engine_arguments, load_engine_from_arguments
from vanilla_transformer.serving.engines import use_languages


class NotUtf8(Exception):
    pass


def utf8_lines(stream, name: str):
    """The lines of a byte stream as text, without line endings; stops at the first line that is not UTF-8."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as error:
            raise NotUtf8(
                f"{name} line {number} is not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte {error.start + 1} "
                "of the line); convert the file to UTF-8, e.g. with `iconv -f latin1 -t utf-8`."
            ) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_engine_arguments(parser)
    parser.add_argument("--input", default="-", help="text file (plain or .gz), one sentence per line; - for stdin")
    parser.add_argument("--output", default="-", help="where translations go; - for stdout")
    parser.add_argument("--source_lang", help="NLLB / M2M100: the source's language code (deu_Latn, de)")
    parser.add_argument("--target_lang", help="NLLB / M2M100: the target's language code (eng_Latn, en)")
    args = parser.parse_args()
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, stream=sys.stderr)
    transformers_logging.disable_progress_bar()  # stderr carries the warnings and errors about the lines

    try:
        engine, tokenizer = load_engine_from_arguments(args)
        use_languages(engine, tokenizer, args.source_lang, args.target_lang)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.input == "-":
        stream, name = sys.stdin.buffer, "stdin"
    else:
        try:
            stream = gzip.open(args.input, "rb") if args.input.endswith(".gz") else open(args.input, "rb")
        except OSError as error:
            print(f"error: cannot read {args.input}: {error.strerror}", file=sys.stderr)
            return 2
        name = args.input
    sentences = utf8_lines(stream, name)
    if args.input != "-":
        sentences = tqdm(sentences, desc="translating", unit="sentence", file=sys.stderr)
    # Someone typing at a terminal gets each translation at once, not after a window of lines
    sort_window = 1 if args.input == "-" and sys.stdin.isatty() else 2048
    failures = []

    def on_failure(error):
        failures.append(error.line)
        logging.error("%s; writing an empty line", error)
        return ""

    output = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        for translation in translate(
            engine, tokenizer, sentences, batch_size=args.batch_size, max_tokens_per_batch=args.max_tokens_per_batch,
            max_source_length=args.max_source_length, sort_window=sort_window, on_failure=on_failure,
            num_beams=args.num_beams, length_penalty=args.length_penalty, max_new_tokens=args.max_new_tokens,
        ):
            output.write(translation + "\n")
            output.flush()
    except NotUtf8 as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if output is not sys.stdout:
            output.close()
        stream.close()
    if failures:
        print(f"error: {len(failures)} line(s) failed to translate: {', '.join(map(str, failures[:20]))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
