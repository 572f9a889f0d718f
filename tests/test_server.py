"""The translation server: LibreTranslate's routes and ours give `translate()`'s translations, concurrent requests
share batches and still get exactly those, bad input and overload get their 4xx / 503 while the server keeps
answering, an engine failure costs only its request, a real LibreTranslate client works unchanged, and SIGTERM
finishes the requests in flight."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from vanilla_transformer.analysis.server_benchmark import wait_until_serving
from vanilla_transformer.serving import load_engine, translate
from vanilla_transformer.serving.request_batching import QueueFull, RequestBatcher
from vanilla_transformer.serving.server import ServerSettings, create_app

from .serving_fixtures import digit_strings, train_reverser

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SOURCES = digit_strings(60, seed=11)


@pytest.fixture(scope="module")
def reverser(tmp_path_factory):
    return train_reverser(tmp_path_factory.mktemp("reverser"))


@pytest.fixture(scope="module")
def loaded(reverser):
    return load_engine(str(reverser))


@pytest.fixture(scope="module")
def alone(loaded):
    """What `translate()` gives each sentence translated alone."""
    engine, tokenizer = loaded
    return {sentence: next(translate(engine, tokenizer, [sentence])) for sentence in SOURCES}


class Recording:
    """An engine that records the batches it is given and can be held (to pile requests up) or made to fail."""

    def __init__(self, engine, fail_on=None, parallel_batches=1):
        self.engine, self.fail_on, self.parallel_batches = engine, fail_on, parallel_batches
        self.max_source_length, self.decoding_options = engine.max_source_length, engine.decoding_options
        self.batches, self.gate = [], threading.Event()
        self.gate.set()

    def translate_ids(self, sources, options):
        self.gate.wait()
        self.batches.append(len(sources))
        if self.fail_on is not None and self.fail_on in sources:
            raise RuntimeError("cannot translate this")
        return self.engine.translate_ids(sources, options)


def serve(engine, tokenizer, **settings):
    return TestClient(create_app(engine, tokenizer, ServerSettings(source_lang="digits", target_lang="reversed", **settings)))


@pytest.mark.parametrize("parallel_batches", [1, 2])
def test_concurrent_requests_share_batches_and_get_what_translate_gives(loaded, alone, parallel_batches):
    engine, tokenizer = loaded
    recording = Recording(engine, parallel_batches=parallel_batches)  # that many waves at once
    batcher = RequestBatcher(recording, tokenizer, max_tokens_per_batch=512)
    recording.gate.clear()  # hold the engine until every request is queued, as under load
    requests = [SOURCES[i : i + 3] for i in range(0, 60, 3)]
    futures = [batcher.submit(sentences, engine.decoding_options()) for sentences in requests]
    recording.gate.set()
    for sentences, future in zip(requests, futures):
        assert future.result(timeout=60) == [alone[s] for s in sentences]
    assert len(recording.batches) < len(requests) / 2  # batched across requests, not one call per request
    assert batcher.queued_sentences == 0
    batcher.close()


def test_libretranslate_and_our_routes(loaded, alone):
    engine, tokenizer = loaded
    with serve(engine, tokenizer) as client:
        one = client.post("/translate", json={"q": SOURCES[0], "source": "digits", "target": "reversed", "format": "text"})
        assert one.status_code == 200 and one.json() == {"translatedText": alone[SOURCES[0]]}
        many = client.post("/translate", json={"q": SOURCES[:4], "source": "digits", "target": "reversed"})
        assert many.json() == {"translatedText": [alone[s] for s in SOURCES[:4]]}
        form = client.post("/translate", data={"q": f"{SOURCES[1]}\n{SOURCES[2]}", "source": "auto", "target": "reversed"})
        assert form.json() == {
            "translatedText": f"{alone[SOURCES[1]]}\n{alone[SOURCES[2]]}",  # line by line
            "detectedLanguage": {"language": "digits", "confidence": 0},
        }
        ours = client.post("/v1/translate", json={"text": SOURCES[:3], "num_beams": 2, "max_new_tokens": 12})
        assert ours.json() == {"translations": list(translate(engine, tokenizer, SOURCES[:3], num_beams=2, max_new_tokens=12))}
        assert client.get("/languages").json() == [
            {"code": "digits", "name": "digits", "targets": ["reversed"]}, {"code": "reversed", "name": "reversed", "targets": []}
        ]
        assert client.get("/frontend/settings").json()["charLimit"] == 10_000
        metrics = client.get("/metrics").text
        assert 'translation_requests_total{route="/translate",status="200"} 3.0' in metrics
        assert "translation_sentences_total 10.0" in metrics and "translation_request_seconds_bucket" in metrics
        # one request after another: one batch each (1, 4, 2 and 3 sentences)
        assert "translation_batch_sentences_count 4.0" in metrics and "translation_batch_sentences_sum 10.0" in metrics
        assert client.get("/openapi.json").json()["paths"].keys() >= {"/translate", "/v1/translate", "/languages", "/health"}


BAD_REQUESTS = [
    ("malformed JSON", dict(content=b'{"q": "12', headers={"content-type": "application/json"}), 400, "not a JSON object or form-encoded fields"),
    ("JSON not an object", dict(json=["12"]), 400, "must be a JSON object"),
    ("missing q", dict(json={"source": "digits", "target": "reversed"}), 400, "missing q parameter"),
    ("q of numbers", dict(json={"q": [1, 2], "source": "digits", "target": "reversed"}), 400, "q must be a string or a list of strings"),
    ("missing target", dict(json={"q": "12", "source": "digits"}), 400, "missing target parameter"),
    ("another pair", dict(json={"q": "12", "source": "de", "target": "en"}), 400, "de -> en is not served: this server translates digits -> reversed"),
    ("html", dict(json={"q": "<b>12</b>", "source": "digits", "target": "reversed", "format": "html"}), 400, "format 'html' is not supported"),
    ("not UTF-8", dict(content=b'{"q": "\xff\xfe", "source": "digits", "target": "reversed"}', headers={"content-type": "application/json"}), 400, "not UTF-8"),
    ("bad form", dict(content=b"q=%ff&source=digits&target=reversed", headers={"content-type": "application/x-www-form-urlencoded"}), 400, "malformed form data"),
    ("too many lines", dict(json={"q": ["1"] * 129, "source": "digits", "target": "reversed"}), 413, "129 lines; the limit is 128 per request"),
    ("too many characters", dict(json={"q": "1" * 10_001, "source": "digits", "target": "reversed"}), 413, "10001 characters; the limit is 10000"),
    ("body too large", dict(json={"q": "1", "source": "digits", "target": "reversed", "pad": "x" * (1 << 20)}), 413, "the limit is 1048576"),
    ("no such route", dict(url="/nowhere"), 404, "Not Found"),
]


@pytest.mark.parametrize("case, request_options, status, message", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_input_gets_its_4xx_and_the_server_keeps_answering(loaded, case, request_options, status, message):
    engine, tokenizer = loaded
    with serve(engine, tokenizer) as client:
        response = client.post(request_options.pop("url", "/translate"), **request_options)
        assert response.status_code == status and message in response.json()["error"], response.text
        assert client.get("/health").status_code == 200


def test_bad_decoding_options_and_the_api_key(loaded):
    engine, tokenizer = loaded
    with serve(engine, tokenizer, api_key="s3cret") as client:
        request = {"q": SOURCES[0], "source": "digits", "target": "reversed"}
        assert client.post("/translate", json=request).status_code == 403
        assert client.post("/translate", json={**request, "api_key": "wrong"}).json() == {"error": "Invalid API key: send the server's key as api_key."}
        assert client.post("/translate", json={**request, "api_key": "s3cret"}).status_code == 200
        for bad in ({"num_beams": 0}, {"num_beams": "4"}, {"max_new_tokens": 2.5}, {"text": "12"}):
            response = client.post("/v1/translate", json={"text": ["12"], "api_key": "s3cret", **bad})
            assert response.status_code == 400, bad
        assert client.post("/v1/translate", json={"text": ["12"], "api_key": "s3cret", "num_beams": 64}).status_code == 413


def test_a_full_queue_answers_503_and_a_failing_sentence_fails_only_its_request(loaded, alone):
    engine, tokenizer = loaded
    held = Recording(engine)
    with serve(held, tokenizer, max_queued_sentences=4) as client:
        held.gate.clear()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/translate", json={"q": SOURCES[:4], "source": "digits", "target": "reversed"})
            deadline = time.time() + 10
            while client.get("/health").json()["queued_sentences"] < 4 and time.time() < deadline:
                time.sleep(0.01)
            busy = client.post("/translate", json={"q": SOURCES[4], "source": "digits", "target": "reversed"})
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "1" and "limit is 4" in busy.json()["error"]
            held.gate.set()
            assert first.result().json()["translatedText"] == [alone[s] for s in SOURCES[:4]]

    failing = Recording(engine, fail_on=tokenizer(SOURCES[1])["input_ids"])
    with serve(failing, tokenizer) as client:
        bad = client.post("/translate", json={"q": SOURCES[:3], "source": "digits", "target": "reversed"})
        assert bad.status_code == 500
        assert bad.json()["error"] == "sentence 2 of the request failed in the engine: RuntimeError: cannot translate this"
        good = client.post("/translate", json={"q": SOURCES[3:5], "source": "digits", "target": "reversed"})
        assert good.json()["translatedText"] == [alone[s] for s in SOURCES[3:5]]


class BreaksOn:
    """A tokenizer that raises on one text: a fault outside any engine call, which no handler foresees."""

    def __init__(self, tokenizer, text):
        self.tokenizer, self.text = tokenizer, text

    def __call__(self, texts, **kwargs):
        if self.text in texts:
            raise KeyError(self.text)
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_an_unforeseen_fault_is_its_requests_json_500_and_the_server_goes_on(loaded, alone):
    engine, tokenizer = loaded
    with serve(engine, BreaksOn(tokenizer, "999")) as client:
        bad = client.post("/translate", json={"q": "999", "source": "digits", "target": "reversed"})
        assert bad.status_code == 500 and bad.json() == {"error": "Internal error: KeyError: '999'"}
        good = client.post("/translate", json={"q": SOURCES[0], "source": "digits", "target": "reversed"})
        assert good.json() == {"translatedText": alone[SOURCES[0]]}
        assert client.get("/health").status_code == 200
        metrics = client.get("/metrics").text
        assert 'translation_requests_total{route="/translate",status="500"} 1.0' in metrics
        assert 'translation_requests_total{route="/translate",status="200"} 1.0' in metrics


def test_a_request_whose_client_left_before_its_turn_costs_nothing(loaded):
    engine, tokenizer = loaded
    held = Recording(engine)
    batcher = RequestBatcher(held, tokenizer, max_queued_sentences=8)
    held.gate.clear()
    first = batcher.submit(SOURCES[:2], engine.decoding_options())
    time.sleep(0.2)  # the first wave has started and waits on the engine
    gone = batcher.submit(SOURCES[2:8], engine.decoding_options())
    assert gone.cancel()
    with pytest.raises(QueueFull):
        batcher.submit(SOURCES[:8], engine.decoding_options())  # still queued until its wave comes
    held.gate.set()
    first.result(timeout=30)
    batcher.close()
    assert sum(held.batches) == 2 and batcher.queued_sentences == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_libretranslate_client_works_unchanged_and_sigterm_finishes_requests_in_flight(reverser, alone):
    from libretranslatepy import LibreTranslateAPI

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, SCRIPTS / "serve.py", "--model", reverser, "--source_lang", "digits", "--target_lang", "reversed",
         "--port", str(port), "--threads", "2"],  # serve.py's default on 2 cores: two waves at once, a thread each
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "VANILLA_TRANSFORMER_API_KEY": "k"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, server, timeout=120)
        client = LibreTranslateAPI(f"{url}/", api_key="k")
        assert client.translate(SOURCES[0], "digits", "reversed") == alone[SOURCES[0]]
        assert client.languages()[0]["targets"] == ["reversed"]

        slow = {"text": SOURCES * 2, "num_beams": 16, "max_new_tokens": 16, "api_key": "k"}
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(httpx.post, f"{url}/v1/translate", json=slow, timeout=120)
            while httpx.get(f"{url}/health").json()["queued_sentences"] == 0:  # until it is being translated
                assert not in_flight.done(), in_flight.result().text
                time.sleep(0.01)
            server.send_signal(signal.SIGTERM)
            answer = in_flight.result()
        assert answer.status_code == 200 and len(answer.json()["translations"]) == 120
        # uvicorn shuts down gracefully, then re-raises the signal so that the exit status says what stopped it
        assert server.wait(timeout=60) == -signal.SIGTERM
        assert "Finished server process" in server.stdout.read()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health")
    finally:
        server.kill()
        server.wait()


def test_the_load_test_counts_every_request_and_compares_every_answer(reverser, tmp_path):
    """`benchmark.py server` as the docs run it, in short phases and with a beam size of its own (the server's and
    the reference's): every request answered, none differing."""
    source = tmp_path / "sources.txt"
    source.write_text("\n".join(SOURCES) + "\n")
    report = tmp_path / "server.json"
    done = subprocess.run(
        [sys.executable, SCRIPTS / "benchmark.py", "server", "--model", reverser, "--source", source, "--langs",
         "digits", "reversed", "--clients", "8", "--seconds", "3", "--port", str(free_port()), "--num_beams", "2", "--json", report],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(report.read_text())
    for phase in ("sequential", "concurrent"):
        row = summary[phase]
        assert row["requests"] > 0 and row["errors"] == row["lost"] == row["different_from_translate"] == 0, row
        assert row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"]
    assert summary["concurrent"]["clients"] == 8 and summary["num_beams"] == 2
    assert summary["engine_alone"]["batched_sentences_per_second"] > 0
    assert "batching across requests" in done.stdout
