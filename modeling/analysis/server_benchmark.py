"""A load test of the translation server, on loopback, bounded in time and count: the server (`scripts/serve.py`) in
its own process, the clients in this one (asyncio, one connection each).

The clients are aiohttp's: on 2 cores the load generator shares the machine with the server, so it must cost little.
httpx's client took a whole core at 32 clients and topped out near 580 requests/s, where aiohttp's took 0.4 of a core
and the server answered 3,000 requests/s (docs/performance.md, "The load generator").

1. One client sends test-set sentences one request at a time, each after the previous answer: what a server without
   batching across requests could do at best.
2. N concurrent clients do the same for the same time (each from its own place in the test set).
Every answer is compared with what `translate()` gives for that sentence in this process, on the same engine; an
answer that differs, an error status and a request that got no answer are counted. Reported per phase: requests/s,
sentences/s, latency p50 / p95 / p99, errors, lost; and the concurrent phase's sentences/s over the sequential one's.
The engine alone, in this process before the server starts, gives what batching can gain at most: its sentences/s
over the test set batched by `translate()` against the same sentences translated one call each, in order, for as long
as a phase lasts (at most the whole set once).
"""

import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.request

import aiohttp

from ..data.translation_data import read_lines
from ..serving.engines import load_engine
from ..serving.translation import translate


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def _client(http: aiohttp.ClientSession, sentences: list[str], expected: list[str], start: int, stop_at: float,
                  pair: tuple[str, str], record: dict) -> None:
    index = start
    while time.perf_counter() < stop_at:
        position = index % len(sentences)
        index += 1
        began = time.perf_counter()
        try:
            async with http.post("/translate", json={"q": sentences[position], "source": pair[0], "target": pair[1]}) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError):
            record["lost"] += 1
            continue
        record["latencies"].append(time.perf_counter() - began)
        translation = _translated_text(body) if status == 200 else None
        if translation is None:
            record["errors"] += 1
        elif translation != expected[position]:
            record["different"] += 1


def _translated_text(body: bytes) -> str | None:
    """LibreTranslate's answer's text, or None for a body that is not such an answer (an error too)."""
    try:
        return json.loads(body)["translatedText"]
    except (ValueError, KeyError, TypeError):
        return None


async def _phase(url: str, clients: int, seconds: float, sentences, expected, pair) -> dict:
    record = {"latencies": [], "errors": 0, "different": 0, "lost": 0}
    connections = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connections, timeout=aiohttp.ClientTimeout(total=60)) as http:
        began = time.perf_counter()
        stop_at = began + seconds
        spread = len(sentences) // clients
        await asyncio.gather(*(_client(http, sentences, expected, c * spread, stop_at, pair, record) for c in range(clients)))
        elapsed = time.perf_counter() - began
    latencies = record["latencies"]
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "sentences_per_second": round(len(latencies) / elapsed, 1),  # one sentence per request
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "latency_p95_ms": round(1000 * percentile(latencies, 0.95), 1),
        "latency_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "errors": record["errors"],
        "different_from_translate": record["different"],
        "lost": record["lost"],
    }


def wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 300) -> None:
    """Returns once `url/health` answers 200; raises with the server's output if it exits or `timeout` passes."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=10):
                return
        except OSError:  # not listening yet, or not healthy yet (urlopen raises HTTPError on any status but 2xx)
            pass
        if server.poll() is not None or time.time() > deadline:
            output = (server.stderr or server.stdout).read()
            raise RuntimeError(f"The server did not start:\n{output[-3000:]}")
        time.sleep(0.2)


def server_benchmark(server_command: list[str], model: str, engine: str, source_file: str, pair: tuple[str, str],
                     port: int, clients: int = 32, seconds: float = 60, threads: int = 2, parallel_batches: int = 1,
                     num_beams: int | None = None) -> dict:
    """Starts `server_command` (which must serve `model` with `engine` on `port`, decoding with `num_beams`: None
    for the model's own), runs both phases, stops it."""
    sentences = [line for line in read_lines(source_file) if line.strip()]
    reference, tokenizer = load_engine(model, engine, threads=threads, parallel_batches=parallel_batches)
    began = time.perf_counter()
    expected = list(translate(reference, tokenizer, sentences, num_beams=num_beams))
    batched = len(sentences) / (time.perf_counter() - began)
    # The sentences the one-client phase sends, in its order and for as long: a hundred were too few, their speed
    # varied by a third from run to run
    began, done = time.perf_counter(), 0
    while done < len(sentences) and time.perf_counter() - began < seconds:
        list(translate(reference, tokenizer, [sentences[done]], num_beams=num_beams))
        done += 1
    one_by_one = done / (time.perf_counter() - began)
    del reference
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(server_command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(url, server)
        sequential = asyncio.run(_phase(url, 1, seconds, sentences, expected, pair))
        concurrent = asyncio.run(_phase(url, clients, seconds, sentences, expected, pair))
    finally:
        server.terminate()
        server.wait(timeout=120)
    return {
        "model": model, "engine": engine, "threads": threads, "parallel_batches": parallel_batches, "num_beams": num_beams,
        "sentences": len(sentences),
        "engine_alone": {"one_by_one_sentences_per_second": round(one_by_one, 1),
                         "batched_sentences_per_second": round(batched, 1),
                         "batching_speedup": round(batched / one_by_one, 2)},
        "sequential": sequential, "concurrent": concurrent,
        "batching_speedup": round(concurrent["sentences_per_second"] / sequential["sentences_per_second"], 2),
    }


def format_server_table(summaries: list[dict]) -> str:
    lines = [
        "| engine | clients | requests | sentences/s | p50 ms | p95 ms | p99 ms | errors | different | lost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for summary in summaries:
        for phase in ("sequential", "concurrent"):
            row = summary[phase]
            lines.append(
                f"| {summary['engine']} | {row['clients']} | {row['requests']} | {row['sentences_per_second']} | "
                f"{row['latency_p50_ms']} | {row['latency_p95_ms']} | {row['latency_p99_ms']} | {row['errors']} | "
                f"{row['different_from_translate']} | {row['lost']} |"
            )
        alone = summary["engine_alone"]
        lines.append(f"| {summary['engine']}: batching across requests | | | {summary['batching_speedup']}x | | | | | | |")
        lines.append(f"| {summary['engine']} alone, no HTTP: one by one -> batched | | | {alone['one_by_one_sentences_per_second']}"
                     f" -> {alone['batched_sentences_per_second']} ({alone['batching_speedup']}x) | | | | | | |")
    return "\n".join(lines)


def serve_command(serve_script: str, model: str, engine: str, pair: tuple[str, str], port: int, threads: int,
                  parallel_batches: int = 1, num_beams: int | None = None) -> list[str]:
    return [sys.executable, serve_script, "--model", model, "--engine", engine, "--source_lang", pair[0],
            "--target_lang", pair[1], "--port", str(port), "--threads", str(threads),
            "--parallel_batches", str(parallel_batches)] + (["--num_beams", str(num_beams)] if num_beams else [])
