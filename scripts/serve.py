"""Serve a saved, pushed or exported model over HTTP: LibreTranslate's API (its clients work unchanged) and our own,
the sentences of concurrent requests translated together (see vanilla_transformer/serving/server.py).

    python scripts/serve.py --model RUN-ct2 --source_lang de --target_lang en --port 8000
    curl -s localhost:8000/translate -H 'Content-Type: application/json' \\
        -d '{"q": "Ein Hund rennt durch den Schnee.", "source": "de", "target": "en"}'

The API key comes from --api_key or the environment variable VANILLA_TRANSFORMER_API_KEY; without one, the server is
open to whoever reaches it (it listens on 127.0.0.1 unless --host says otherwise). SIGTERM or Ctrl-C stops taking
requests and finishes those in flight.
"""

import argparse
import logging
import os
import sys

import uvicorn
import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from huggingface_hub import ModelCard
from vanilla_transformer.serving.command_line import add_engine_arguments, load_engine_from_arguments
from vanilla_transformer.serving.engines import use_languages
from vanilla_transformer.serving.server import ServerSettings, create_app


def card_languages(model: str) -> list[str]:
    """The model card's `language` list (source first, as training writes it), or [] when there is none."""
    try:
        return list(ModelCard.load(os.path.join(model, "README.md") if os.path.isdir(model) else model).data.language or [])
    except Exception:  # no card, or one without metadata
        return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_engine_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api_key", default=os.environ.get("VANILLA_TRANSFORMER_API_KEY"),
                        help="required of every request (default: env VANILLA_TRANSFORMER_API_KEY; none: open)")
    parser.add_argument("--source_lang", help="the language the model reads (default: the model card's first; NLLB / M2M100: its code, deu_Latn)")
    parser.add_argument("--target_lang", help="the language it writes (default: the model card's second; NLLB / M2M100: its code, eng_Latn)")
    parser.add_argument("--max_sentences", type=int, default=128, help="most lines in one request (413 beyond)")
    parser.add_argument("--max_characters", type=int, default=10_000, help="most characters in one request (413 beyond)")
    parser.add_argument("--max_body_bytes", type=int, default=1 << 20, help="largest request body (413 beyond)")
    parser.add_argument("--max_queued_sentences", type=int, default=4096, help="sentences waiting before 503 + Retry-After")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    languages = card_languages(args.model)
    source_lang = args.source_lang or (languages[0] if len(languages) == 2 else None)
    target_lang = args.target_lang or (languages[1] if len(languages) == 2 else None)
    if source_lang is None or target_lang is None:
        parser.error("give --source_lang and --target_lang: the model's card does not name its two languages")
    try:
        engine, tokenizer = load_engine_from_arguments(args)
        use_languages(engine, tokenizer, source_lang, target_lang)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = ServerSettings(
        source_lang=source_lang, target_lang=target_lang, api_key=args.api_key or None,
        max_body_bytes=args.max_body_bytes, max_sentences=args.max_sentences, max_characters=args.max_characters,
        max_queued_sentences=args.max_queued_sentences, batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch, max_source_length=args.max_source_length,
        num_beams=args.num_beams, length_penalty=args.length_penalty, max_new_tokens=args.max_new_tokens,
    )
    # One process: the engine's threads are the parallelism, and one batcher sees every request to batch them
    uvicorn.run(create_app(engine, tokenizer, settings), host=args.host, port=args.port, timeout_graceful_shutdown=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
