"""The web export: a folder in the ecosystem's ONNX layout that transformers.js runs (in Node and in a browser, from the
folder alone) with exactly PyTorch's greedy translations, and that our ONNX Runtime engine runs too.

transformers.js comes from `npm ci --prefix tests/web` (the README's test command); without `node` or that install,
or without Debian's `chromium` and `chromium-driver` for the page, the tests that need them skip and say why.
"""

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from vanilla_transformer.serving import export_model, load_engine, translate

from .serving_fixtures import digit_strings, train_reverser

WEB_TESTS = Path(__file__).resolve().parent / "web"
NODE_MODULES = WEB_TESTS / "node_modules"
SOURCES = digit_strings(100, seed=7)


def needs_transformers_js():
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the web export's transformers.js tests need Node 18 or later")
    if not (NODE_MODULES / "@huggingface" / "transformers").is_dir():
        pytest.skip("transformers.js is not installed: run `npm ci --prefix tests/web` (the README's test command)")


@pytest.fixture(scope="module")
def reverser(tmp_path_factory):
    return train_reverser(tmp_path_factory.mktemp("reverser"))


@pytest.fixture(scope="module")
def greedy(reverser):
    """PyTorch's greedy translations of SOURCES."""
    engine, tokenizer = load_engine(str(reverser))
    return list(translate(engine, tokenizer, SOURCES, num_beams=1))


@pytest.fixture(scope="module")
def web_export(reverser, tmp_path_factory):
    needs_transformers_js()
    return export_model(str(reverser), "web", tmp_path_factory.mktemp("web") / "reverser-web", quantization="int8",
                        transformers_js=str(NODE_MODULES))


def node_translate(folder: Path, sentences: list[str], dtype: str, tmp_path: Path) -> list[str]:
    source, output = tmp_path / f"{dtype}.txt", tmp_path / f"{dtype}.json"
    source.write_text("\n".join(sentences) + "\n")
    done = subprocess.run(["node", WEB_TESTS / "translate.mjs", folder, source, output, dtype],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(output.read_text())["translations"]


def test_the_export_has_the_layout_transformers_js_reads(web_export):
    config = json.loads((web_export / "config.json").read_text())
    assert config["model_type"] == "marian" and config["transformers.js_config"] == {"dtype": "q8"}
    decoder = onnx.load(web_export / "onnx" / "decoder_model_merged.onnx", load_external_data=False).graph
    layers = config["decoder_layers"]
    past = [f"past_key_values.{i}.{part}.{kind}" for i in range(layers) for part in ("decoder", "encoder") for kind in ("key", "value")]
    assert [i.name for i in decoder.input] == ["input_ids", "encoder_attention_mask", "encoder_hidden_states", *past, "use_cache_branch"]
    assert [o.name for o in decoder.output] == ["logits", *(name.replace("past_key_values", "present") for name in past)]
    encoder = onnx.load(web_export / "onnx" / "encoder_model.onnx", load_external_data=False).graph
    assert [i.name for i in encoder.input] == ["input_ids", "attention_mask"] and encoder.output[0].name == "last_hidden_state"
    for name in ("encoder_model_quantized.onnx", "decoder_model_merged_quantized.onnx", "../vendor/transformers.min.js",
                 "../vendor/ort-wasm-simd-threaded.jsep.wasm", "../index.html", "../tokenizer.json", "../generation_config.json"):
        assert (web_export / "onnx" / name).is_file(), name


def test_transformers_js_in_node_translates_as_pytorch_greedy(web_export, greedy, tmp_path):
    assert node_translate(web_export, SOURCES, "fp32", tmp_path) == greedy
    int8 = node_translate(web_export, SOURCES, "q8", tmp_path)
    assert np.mean([a == b for a, b in zip(int8, greedy)]) >= 0.75


def test_our_onnx_runtime_engine_runs_the_same_files(reverser, web_export, greedy):
    """The int8 graphs that the page runs, through generate(): greedy and beam search."""
    engine, tokenizer = load_engine(str(web_export))
    assert engine.model.decoder_session._model_path.endswith("decoder_model_merged_quantized.onnx")
    assert np.mean([a == b for a, b in zip(translate(engine, tokenizer, SOURCES, num_beams=1), greedy)]) >= 0.9
    torch_engine, _ = load_engine(str(reverser))
    beam = list(translate(torch_engine, tokenizer, SOURCES, num_beams=4))
    assert np.mean([a == b for a, b in zip(translate(engine, tokenizer, SOURCES, num_beams=4), beam)]) >= 0.9


def test_the_page_translates_in_headless_chromium(web_export, greedy):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("the browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the test extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(web_export))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/index.html?dtype=fp32")
        state = lambda _: browser.find_element(By.TAG_NAME, "body").get_attribute("data-state")  # noqa: E731
        WebDriverWait(browser, 120).until(lambda b: state(b) in ("ready", "failed"))
        assert state(browser) == "ready", browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "source").send_keys("\n".join(SOURCES[:3]))
        browser.find_element(By.ID, "translate").click()
        WebDriverWait(browser, 120).until(lambda b: state(b) == "done")
        lines = browser.find_element(By.ID, "translation").text.split("\n")
    finally:
        browser.quit()
        server.shutdown()
    assert lines == greedy[:3]


def test_a_web_export_without_transformers_js_is_refused_naming_the_fix(reverser, tmp_path):
    with pytest.raises(ValueError, match="npm install @huggingface/transformers"):
        export_model(str(reverser), "web", tmp_path / "web", transformers_js=str(tmp_path / "nowhere"))
    assert not (tmp_path / "web").exists()


def test_an_export_of_the_old_onnx_layout_is_refused_naming_the_fix(reverser, tmp_path):
    folder = tmp_path / "old-onnx"
    folder.mkdir()
    (folder / "decoder_step.onnx").write_bytes(b"")
    (folder / "encoder.onnx").write_bytes(b"")
    config = json.loads((reverser / "config.json").read_text())
    (folder / "export.json").write_text(json.dumps({"format": "onnx", "quantization": "float32", "config": config}))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(reverser / name, folder / name)
    with pytest.raises(ValueError, match="earlier layout.*export the saved model again"):
        load_engine(str(folder))
