"""Export a saved (or pushed) model for serving: a folder that translates on its own with
`scripts/translate.py --model OUT` (the engine is recognized), holding the engine's files, the tokenizer and the
generation settings.

    python scripts/export.py --model RUN --format ctranslate2 --output_dir RUN-ct2 --quantization int8
    python scripts/export.py --model RUN --format onnx --output_dir RUN-onnx --quantization int8
    npm install @huggingface/transformers && python scripts/export.py --model RUN --format web --output_dir RUN-web \
        --quantization int8 --transformers_js node_modules && cd RUN-web && python -m http.server 8000
"""

import argparse
import sys

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.serving import CTRANSLATE2_QUANTIZATIONS, EXPORT_FORMATS, export_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved model directory or a Hub repo id (with its tokenizer)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    parser.add_argument("--output_dir", required=True, help="a new or empty folder, or an earlier export to replace")
    parser.add_argument("--quantization", choices=CTRANSLATE2_QUANTIZATIONS,
                        help="weights' type (default float32); onnx and web: float32 or int8 (int8 graphs added and run)")
    parser.add_argument("--transformers_js", help="web: the node_modules folder holding @huggingface/transformers")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub model")
    args = parser.parse_args()
    try:
        output = export_model(args.model, args.format, args.output_dir, args.quantization, args.revision, args.transformers_js)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported to {output}/; translate with: python scripts/translate.py --model {output}")
    if args.format == "web":
        print(f"in the browser: cd {output} && python -m http.server 8000, then open http://localhost:8000/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
