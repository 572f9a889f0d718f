"""A translation server: LibreTranslate's HTTP API (so that its clients work unchanged) and our own, over any engine,
with the sentences of concurrent requests translated together (`request_batching`). Built on FastAPI (Starlette)
and served by uvicorn, which also stops it gracefully on SIGTERM: no new connections, the requests in flight finished.

Routes:
- `POST /translate` (LibreTranslate): JSON or form-encoded `q` (a string or a list of strings), `source`, `target`,
  `format` (`text`), `api_key` -> `{"translatedText": ...}` (a string or a list, as `q` was). A text of several
  lines is translated line by line and joined again.
- `GET /languages`, `GET /frontend/settings` (LibreTranslate): the model's language pair, the limits.
- `POST /v1/translate`: `{"text": [...], "num_beams": ..., "length_penalty": ..., "max_new_tokens": ...}` ->
  `{"translations": [...]}`.
- `GET /health`, `GET /metrics` (Prometheus), `GET /docs` (the OpenAPI page).

Every error is `{"error": "..."}` with its status, as LibreTranslate answers: 400 for a malformed request, 403 for a
missing or wrong API key, 413 beyond a size limit (named), 503 with Retry-After when the queue is full, 500 when
the engine fails on a request's sentence (that request only).
"""

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException

from .request_batching import QueueFull, RequestBatcher, ServerClosing, TranslationFailed

logger = logging.getLogger(__name__)

LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "de": "German", "en": "English", "es": "Spanish", "fr": "French", "it": "Italian",
    "ja": "Japanese", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "tr": "Turkish",
    "uk": "Ukrainian", "zh": "Chinese",
}


@dataclass
class ServerSettings:
    """What the server serves and the limits that keep it up under load and bad input: every cap in one place."""

    source_lang: str
    target_lang: str
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_sentences: int = 128  # lines per request
    max_characters: int = 10_000  # per request
    max_queued_sentences: int = 4096  # waiting across requests, before 503
    batch_size: int = 64
    max_tokens_per_batch: int = 2048
    max_source_length: int | None = None
    num_beams: int | None = None  # decoding defaults: the model's generation config where None
    length_penalty: float | None = None
    max_new_tokens: int | None = None
    max_request_num_beams: int = 16  # the most a /v1/translate request may ask for
    max_request_new_tokens: int = 1024
    frontend_timeout_ms: int = 500  # LibreTranslate's web frontend: how long it waits after typing stops


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class ServerMetrics:
    """The Prometheus metrics of one app, in a registry of its own."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("translation_requests", "Requests by route and status", ["route", "status"], registry=self.registry)
        self.sentences = Counter("translation_sentences", "Sentences translated", registry=self.registry)
        self.tokens = Counter("translation_output_tokens", "Tokens of the translations", registry=self.registry)
        self.latency = Histogram(
            "translation_request_seconds", "Time to answer a translation request", ["route"], registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.queue_length = Gauge("translation_queued_sentences", "Sentences waiting or being translated", registry=self.registry)
        # How much concurrent requests share: batches of 1 under load mean batching across requests is not happening
        self.batch_sentences = Histogram(
            "translation_batch_sentences", "Sentences in each batch the engine translated", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )


@dataclass
class ServerState:
    """What the routes share: the engine and its tokenizer, the settings, the server's decoding options, the
    metrics, and the batcher (made when the server starts)."""

    engine: object
    tokenizer: object
    settings: ServerSettings
    metrics: ServerMetrics
    batcher: RequestBatcher | None = None

    @property
    def served_decoding(self) -> dict:
        """The server's decoding settings; /v1/translate may override them per request."""
        settings = self.settings
        return dict(num_beams=settings.num_beams, length_penalty=settings.length_penalty, max_new_tokens=settings.max_new_tokens)

    def count_batch(self, outputs: list) -> None:
        texts = [text for text in outputs if isinstance(text, str) and text]
        self.metrics.sentences.inc(len(outputs))
        self.metrics.batch_sentences.observe(len(outputs))
        if texts:
            self.metrics.tokens.inc(sum(len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]))


def create_app(engine, tokenizer, settings: ServerSettings) -> FastAPI:
    """The ASGI app over `engine` (see `serving.engines.load_engine`): the routes below over one `ServerState`."""
    state = ServerState(engine, tokenizer, settings, ServerMetrics())
    options = engine.decoding_options(**state.served_decoding)

    async def lifespan(app):
        state.batcher = RequestBatcher(
            engine, tokenizer, settings.max_queued_sentences, settings.batch_size, settings.max_tokens_per_batch,
            settings.max_source_length, on_batch=state.count_batch,
        )
        state.metrics.queue_length.set_function(lambda: state.batcher.queued_sentences)
        yield
        # uvicorn has stopped taking requests and finished those in flight; whatever is still queued is finished too
        await asyncio.to_thread(state.batcher.close)

    app = FastAPI(
        title="vanilla-transformer translation server",
        description=f"Translates {settings.source_lang} -> {settings.target_lang}. LibreTranslate-compatible routes "
        "(/translate, /languages, /frontend/settings) and our own (/v1/translate).",
        lifespan=lifespan,
    )
    app.state.server, app.state.options = state, options
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(Measured, requests=state.metrics.requests, latency=state.metrics.latency)
    app.add_api_route("/translate", libre_translate, methods=["POST"], summary="LibreTranslate: translate q from source to target")
    app.add_api_route("/v1/translate", v1_translate, methods=["POST"], summary="Translate a list of texts, with decoding options")
    app.add_api_route("/languages", languages, methods=["GET"], summary="LibreTranslate: the languages served")
    app.add_api_route("/frontend/settings", frontend_settings, methods=["GET"], summary="LibreTranslate: what a client may send")
    app.add_api_route("/health", health, methods=["GET"], summary="Liveness: 200 while the server answers")
    app.add_api_route("/metrics", metrics, methods=["GET"], summary="Prometheus metrics")
    return app


async def api_error(request: Request, error: ApiError):
    return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)


async def http_error(request: Request, error: HTTPException):
    return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)


async def validation_error(request: Request, error: RequestValidationError):
    return JSONResponse({"error": f"Invalid request: {error.errors()}"}, status_code=400)


async def translated(request: Request, lines: list[str], decoding) -> list[str]:
    """The translations of `lines`, through the shared batcher; gives up, and frees its place in the queue, if the
    client goes away before its wave starts."""
    try:
        future = request.app.state.server.batcher.submit(lines, decoding)
    except QueueFull as error:
        raise ApiError(503, f"The server is busy: {error} Retry later.", {"Retry-After": "1"}) from None
    except ServerClosing as error:
        raise ApiError(503, str(error), {"Retry-After": "5"}) from None
    waiting = asyncio.wrap_future(future)
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=0.25)
        if done:
            break
        if await request.is_disconnected():
            future.cancel()
            raise ApiError(499, "The client closed the request.")
    try:
        return waiting.result()
    except TranslationFailed as error:
        raise ApiError(500, str(error)) from None


def check_key(settings: ServerSettings, given) -> None:
    if settings.api_key is None:
        return
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
        raise ApiError(403, "Invalid API key: send the server's key as api_key.")


def split_lines(settings: ServerSettings, texts: list[str]) -> tuple[list[str], list[int]]:
    """The lines of every text, and how many each text has; refuses a request over the line or character limits."""
    lines, counts = [], []
    for text in texts:
        parts = text.split("\n")
        lines.extend(parts)
        counts.append(len(parts))
    if len(lines) > settings.max_sentences:
        raise ApiError(413, f"The request holds {len(lines)} lines; the limit is {settings.max_sentences} per request.")
    characters = sum(len(line) for line in lines)
    if characters > settings.max_characters:
        raise ApiError(413, f"The request holds {characters} characters; the limit is {settings.max_characters} per request.")
    return lines, counts


def joined(translations: list[str], counts: list[int]) -> list[str]:
    out, start = [], 0
    for n in counts:
        out.append("\n".join(translations[start : start + n]))
        start += n
    return out


async def libre_translate(request: Request):
    settings = request.app.state.server.settings
    fields = await read_fields(request, settings.max_body_bytes)
    check_key(settings, fields.get("api_key"))
    q = fields.get("q")
    if q is None:
        raise ApiError(400, "Invalid request: missing q parameter")
    if not (isinstance(q, str) or (isinstance(q, list) and all(isinstance(item, str) for item in q))):
        raise ApiError(400, "Invalid request: q must be a string or a list of strings")
    for name in ("source", "target"):
        if not isinstance(fields.get(name), str):
            raise ApiError(400, f"Invalid request: missing {name} parameter")
    source, target = fields["source"], fields["target"]
    if source not in (settings.source_lang, "auto") or target != settings.target_lang:
        raise ApiError(
            400, f"{source} -> {target} is not served: this server translates {settings.source_lang} -> "
            f"{settings.target_lang} only."
        )
    text_format = fields.get("format", "text")
    if text_format != "text":
        raise ApiError(400, f"format {text_format!r} is not supported: send plain text with format 'text'.")
    texts = [q] if isinstance(q, str) else q
    lines, counts = split_lines(settings, texts)
    translations = joined(await translated(request, lines, request.app.state.options), counts)
    answer = {"translatedText": translations[0] if isinstance(q, str) else translations}
    if source == "auto":  # no detection: every text is taken for the one source language the model reads
        answer["detectedLanguage"] = {"language": settings.source_lang, "confidence": 0}
    return answer


async def v1_translate(request: Request):
    state: ServerState = request.app.state.server
    settings = state.settings
    fields = await read_fields(request, settings.max_body_bytes, form=False)
    check_key(settings, fields.get("api_key"))
    texts = fields.get("text")
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise ApiError(400, 'Invalid request: "text" must be a list of strings')
    overrides = {}
    for name, kind in (("num_beams", int), ("length_penalty", (int, float)), ("max_new_tokens", int)):
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind) or value <= 0 and name != "length_penalty":
            raise ApiError(400, f"Invalid request: {name} must be a positive number, got {value!r}")
        overrides[name] = value
    if overrides.get("num_beams", 1) > settings.max_request_num_beams or (
        overrides.get("max_new_tokens", 1) > settings.max_request_new_tokens
    ):
        raise ApiError(
            413, f"Invalid request: num_beams is limited to {settings.max_request_num_beams} and max_new_tokens to "
            f"{settings.max_request_new_tokens}."
        )
    decoding = state.engine.decoding_options(**{**state.served_decoding, **overrides})
    lines, counts = split_lines(settings, texts)
    return {"translations": joined(await translated(request, lines, decoding), counts)}


async def languages(request: Request):
    settings = request.app.state.server.settings
    return [
        {"code": settings.source_lang, "name": language_name(settings.source_lang), "targets": [settings.target_lang]},
        {"code": settings.target_lang, "name": language_name(settings.target_lang), "targets": []},
    ]


async def frontend_settings(request: Request):
    settings = request.app.state.server.settings
    return {
        "charLimit": settings.max_characters,
        "frontendTimeout": settings.frontend_timeout_ms,
        "apiKeys": settings.api_key is not None,
        "keyRequired": settings.api_key is not None,
        "suggestions": False,
        "filesTranslation": False,
        "supportedFilesFormat": [],
        "language": {
            "source": {"code": settings.source_lang, "name": language_name(settings.source_lang)},
            "target": {"code": settings.target_lang, "name": language_name(settings.target_lang)},
        },
    }


async def health(request: Request):
    return {"status": "ok", "queued_sentences": request.app.state.server.batcher.queued_sentences}


async def metrics(request: Request):
    return Response(generate_latest(request.app.state.server.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class Measured:
    """Counts every request by route and status, times the translation routes, and makes an unforeseen fault that
    request's JSON 500, never a dead worker. Plain ASGI: Starlette's `BaseHTTPMiddleware` (`@app.middleware`) runs
    each request through extra tasks and streams, a tenth of the server's time under load."""

    def __init__(self, app, requests: Counter, latency: Histogram):
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = []

        async def sending(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:
            logger.exception("request %s %s failed", scope["method"], scope["path"])
            if status:  # the answer had begun: the client sees it cut short
                raise
            response = JSONResponse({"error": f"Internal error: {type(error).__name__}: {error}"}, status_code=500)
            await response(scope, receive, sending)
        route = scope["path"]
        if route in ("/translate", "/v1/translate"):
            self.latency.labels(route).observe(time.perf_counter() - start)
        self.requests.labels(route, str(status[0])).inc()


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


async def read_fields(request: Request, limit: int, form: bool = True) -> dict:
    """The request's fields from a JSON object or (with `form`) a form-encoded body, read up to `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"The request body is {declared} bytes; the limit is {limit}.")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, f"The request body is over the limit of {limit} bytes.")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, f"Invalid request: the body is not UTF-8 ({error.reason} at byte {error.start}).") from None
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if form and kind == "application/x-www-form-urlencoded":
        fields: dict = {}
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, f"Invalid request: malformed form data ({error}).") from None
        for name, value in pairs:
            if name == "q" and "q" in fields:  # q repeated: a list of texts
                fields["q"] = (fields["q"] if isinstance(fields["q"], list) else [fields["q"]]) + [value]
            else:
                fields[name] = value
        return fields
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as error:
        expected = "a JSON object or form-encoded fields" if form else "a JSON object"
        raise ApiError(400, f"Invalid request: the body is not {expected} ({error.msg} at character {error.pos}).") from None
    if not isinstance(fields, dict):
        raise ApiError(400, "Invalid request: the body must be a JSON object.")
    return fields
