"""transformers' own common model tests, taken from the source distribution of the installed transformers release.

The transformers wheel has no tests; its source distribution on the package registry ships `tests/
test_modeling_common.py` (`ModelTesterMixin`, the tests every built-in model passes). It is fetched once per release
with `pip download` (so it comes from wherever pip is configured to look) into a cache folder, under a file lock so
that the suite's parallel workers fetch it once, and imported as the package `transformers_tests` (the name `tests`
is ours).

That file imports three modules its source distribution does not ship: `exporters/test_export.py` (the
`ExportTesterMixin` base of `ModelTesterMixin`: torch.export round trips), `generation/test_utils.py`
(`GenerationTesterMixin`) and `utils/test_configuration_utils.py`. They stand here as empty modules: those tests are
not in the release, so they cannot run from it (our own torch.export and generation tests cover the same ground:
`test_model.py`, `test_generation.py`).
"""

import importlib
import os
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import transformers
from filelock import FileLock

PACKAGE = "transformers_tests"
NOT_SHIPPED = {
    "exporters.test_export": {"ExportTesterMixin": type("ExportTesterMixin", (), {})},
    "generation.test_utils": {"GenerationTesterMixin": type("GenerationTesterMixin", (), {})},
}


class CommonTestsUnavailable(RuntimeError):
    """The release's tests are neither cached nor fetchable here (no package registry): their tests skip."""


def cache_folder() -> Path:
    root = os.environ.get("VANILLA_TRANSFORMER_TEST_CACHE") or Path.home() / ".cache" / "vanilla-transformer"
    return Path(root) / f"transformers-{transformers.__version__}-tests"


def fetch_common_tests() -> Path:
    """The folder holding `transformers_tests/` (the release's `tests/`), fetched and unpacked on first use."""
    folder = cache_folder()
    done = folder / "complete"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if done.exists():
            return folder
        download = folder / "download"
        download.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", f"transformers=={transformers.__version__}",
                   "--no-deps", "--no-binary", ":all:", "--dest", str(download), "--retries", "1", "--timeout", "30"]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise CommonTestsUnavailable(
                f"transformers' common model tests need the source distribution of transformers "
                f"{transformers.__version__}, which `{' '.join(command)}` could not fetch (offline?): "
                f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no error message'}. "
                f"Run the suite once with the package registry reachable, or unpack the sdist's tests/ into "
                f"{folder / PACKAGE}/ and create {done}."
            )
        (archive,) = download.glob("transformers-*.tar.gz")
        prefix = f"transformers-{transformers.__version__}/tests/"
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith(prefix) and member.name.endswith(".py"):
                    target = folder / PACKAGE / member.name[len(prefix) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())
        (folder / PACKAGE / "__init__.py").touch()
        archive.unlink()
        done.touch()
    return folder


def import_common_tests() -> types.ModuleType:
    """`transformers_tests.test_modeling_common`, with the modules its release does not ship standing in empty."""
    folder = fetch_common_tests()
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    for name, members in NOT_SHIPPED.items():
        parent = f"{PACKAGE}.{name.split('.')[0]}"
        sys.modules.setdefault(parent, types.ModuleType(parent))
        module = sys.modules.setdefault(f"{PACKAGE}.{name}", types.ModuleType(f"{PACKAGE}.{name}"))
        module.__dict__.update(members)
    return importlib.import_module(f"{PACKAGE}.test_modeling_common")
