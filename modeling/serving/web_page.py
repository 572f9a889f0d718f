"""The page of a web export: `index.html`, which translates what a person types with transformers.js running the
export's ONNX graphs in the browser (ONNX Runtime Web, WebAssembly), and the library's own files under `vendor/`, so
that the folder works offline once served (`python -m http.server`): no CDN, no Hub.

The library comes from an installed npm package (`npm install @huggingface/transformers`): its browser bundle
(`dist/transformers.min.js`) and the WebAssembly build of ONNX Runtime that bundle loads (`onnxruntime-web`'s
`ort-wasm-simd-threaded.jsep.*`, of the version the package depends on).
"""

import json
import shutil
from pathlib import Path

PAGE = Path(__file__).parent / "web" / "index.html"
BUNDLE = "dist/transformers.min.js"
RUNTIME_FILES = ("ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")


def find_transformers_js(given: str | None) -> dict[str, Path]:
    """The files to vendor, from `given` (the package folder or a `node_modules` holding it; default
    ./node_modules); refused, naming the fix, when the package or its ONNX Runtime is not there."""
    roots = [Path(given)] if given else [Path("node_modules")]
    candidates = [root / "@huggingface" / "transformers" if (root / "@huggingface").is_dir() else root for root in roots]
    package = next((folder for folder in candidates if (folder / BUNDLE).is_file()), None)
    if package is None:
        raise ValueError(
            f"The web export needs transformers.js installed: no {BUNDLE} under {roots[0]}. Run "
            "`npm install @huggingface/transformers` and pass --transformers_js node_modules (or run the export "
            "where that node_modules folder is)."
        )
    # npm puts onnxruntime-web beside the package, or inside it when versions conflict
    runtimes = [package / "node_modules" / "onnxruntime-web", package.parent.parent / "onnxruntime-web"]
    runtime = next((folder for folder in runtimes if (folder / "dist" / RUNTIME_FILES[1]).is_file()), None)
    if runtime is None:
        raise ValueError(f"{package} has no onnxruntime-web beside it: reinstall it with `npm install @huggingface/transformers`.")
    files = {"transformers.min.js": package / BUNDLE}
    for name in RUNTIME_FILES:
        files[name] = runtime / "dist" / name
    files["version"] = json.loads((package / "package.json").read_text())["version"]
    return files


def write_page(folder: Path, library: dict) -> None:
    vendor = folder / "vendor"
    vendor.mkdir()
    for name, source in library.items():
        if name != "version":
            shutil.copyfile(source, vendor / name)
    page = PAGE.read_text().replace("{{TRANSFORMERS_JS_VERSION}}", library["version"])
    (folder / "index.html").write_text(page)
