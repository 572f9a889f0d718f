"""The page of a web export: `index.html`, which translates what a person types with transformers.js running the
export's ONNX graphs in the browser (ONNX Runtime Web, WebAssembly), and the library's own files under `vendor/`, so
that the folder works offline once served (`python -m http.server`): no CDN, no Hub.

The library comes from an installed npm package (`npm install @huggingface/transformers`): its browser bundle
(`dist/transformers.min.js`) and the WebAssembly build of ONNX Runtime that bundle loads (`onnxruntime-web`'s
`ort-wasm-simd-threaded.jsep.*`, of the version the package depends on).
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

PAGE = Path(__file__).parent / "web" / "index.html"
BUNDLE = "dist/transformers.min.js"
RUNTIME_FILES = ("ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")


@dataclass
class TransformersJs:
    """An installed transformers.js: the files the page carries (by their name in `vendor/`) and its version."""

    files: dict[str, Path]
    version: str


def find_transformers_js(given: str | None) -> TransformersJs:
    """The files to vendor, from `given` (the package folder or a `node_modules` holding it; default
    ./node_modules); refused, naming the fix, when the package or its ONNX Runtime is not there."""
    root = Path(given or "node_modules")
    package = root / "@huggingface" / "transformers" if (root / "@huggingface").is_dir() else root
    if not (package / BUNDLE).is_file():
        raise ValueError(
            f"The web export needs transformers.js installed: no {BUNDLE} under {root}. In this repository run "
            "`npm ci --prefix tests/web` and pass --transformers_js tests/web/node_modules; elsewhere "
            "`npm install @huggingface/transformers` and pass --transformers_js node_modules."
        )
    # npm puts onnxruntime-web beside the package, or inside it when versions conflict
    runtimes = [package / "node_modules" / "onnxruntime-web", package.parent.parent / "onnxruntime-web"]
    runtime = next((folder for folder in runtimes if (folder / "dist" / RUNTIME_FILES[1]).is_file()), None)
    if runtime is None:
        raise ValueError(f"{package} has no onnxruntime-web beside it: reinstall it with `npm install @huggingface/transformers`.")
    files = {"transformers.min.js": package / BUNDLE, **{name: runtime / "dist" / name for name in RUNTIME_FILES}}
    return TransformersJs(files, json.loads((package / "package.json").read_text())["version"])


def write_page(folder: Path, library: TransformersJs) -> None:
    vendor = folder / "vendor"
    vendor.mkdir()
    for name, source in library.files.items():
        shutil.copyfile(source, vendor / name)
    page = PAGE.read_text().replace("{{TRANSFORMERS_JS_VERSION}}", library.version)
    (folder / "index.html").write_text(page)
