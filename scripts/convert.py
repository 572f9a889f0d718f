"""Convert a pretrained translator of this architecture into this package's model: an opus-mt (Marian), NLLB-200 /
M2M100 or fairseq WMT19 (FSMT) checkpoint, with its tokenizer and generation settings, becomes a folder that
`AutoModelForSeq2SeqLM` / `AutoTokenizer` load as the hand-written Transformer (`trust_remote_code=True` where this
package is not installed), and that `run_translation.py`, `export.py`, `translate.py` and `serve.py` take.

    python scripts/convert.py --model Helsinki-NLP/opus-mt-de-en --output_dir opus-mt-de-en
    python scripts/convert.py --model facebook/nllb-200-distilled-600M --output_dir nllb-600M
"""

import argparse
import sys

from vanilla_transformer.conversion.pretrained import ConversionError, convert_pretrained_translator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a Hub repo id or a folder of a Marian, M2M100 or FSMT model")
    parser.add_argument("--output_dir", required=True, help="a new or empty folder")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub model")
    args = parser.parse_args()
    try:
        converted = convert_pretrained_translator(args.model, args.output_dir, args.revision)
    except (ConversionError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"converted the {converted.family} model {args.model} ({converted.parameters:,} parameters) to "
        f"{converted.output_dir}/; its logits equal the source's within {converted.max_logit_difference:.1e} on a "
        f"test sentence. Translate with: python scripts/translate.py --model {converted.output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
