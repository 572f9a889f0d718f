#!/usr/bin/env bash
# The GPU check, in one command, for the day a GPU machine is lent: the tests marked `gpu` (mixed precision, fused
# attention kernels, cached generation, FSDP on one GPU, CTranslate2 on CUDA), then the base model's speed against
# MarianMTModel on the GPU (training tokens/s and MFU against the matmul peak measured in the same run, generation
# tokens/s), written together to one JSON (default gpu_check.json). About 5 minutes on an H100.
#
#     bash scripts/gpu_check.sh [OUTPUT.json]
#
# On a machine without CUDA it says so and exits 0, running nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
output=${1:-gpu_check.json}
if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False): nothing to run"
    exit 0
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$scratch/device.txt" 2>&1
timeout 300 python -m pytest -p no:xdist -o addopts= -q -m gpu tests/test_gpu.py --junitxml "$scratch/tests.xml" \
    > "$scratch/tests.log" 2>&1
tests_status=$?
timeout 240 python scripts/benchmark.py model --size base --device cuda --dtype bf16 --repeats 5 --warmup 2 \
    --models ours-sdpa marian-sdpa --json "$scratch/benchmark.json" > "$scratch/benchmark.log" 2>&1
benchmark_status=$?
python - "$scratch" "$output" "$tests_status" "$benchmark_status" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
scratch, output, tests_status, benchmark_status = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tests = {}
if (scratch / "tests.xml").is_file():
    for case in ET.parse(scratch / "tests.xml").iter("testcase"):
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = f"{kind}: {(found.get('message') or '')[:300]}"
        tests[case.get("name")] = outcome
report = {
    "device": (scratch / "device.txt").read_text().strip(),
    "tests_exit_status": tests_status,
    "tests": tests,
    "tests_log_tail": (scratch / "tests.log").read_text()[-3000:],
    "benchmark_exit_status": benchmark_status,
    "benchmark": json.loads((scratch / "benchmark.json").read_text()) if (scratch / "benchmark.json").is_file() else None,
    "benchmark_log_tail": (scratch / "benchmark.log").read_text()[-3000:],
}
Path(output).write_text(json.dumps(report, indent=2) + "\n")
print(f"gpu_check: tests exit {tests_status}, benchmark exit {benchmark_status}; wrote {output}")
PY
[ "$tests_status" -eq 0 ] && [ "$benchmark_status" -eq 0 ]
