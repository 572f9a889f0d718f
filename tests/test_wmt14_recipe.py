"""The README's WMT14 en-de commands, run as written on a small stand-in of the Hub dataset `wmt/wmt14` (`de-en`):
the same layout (a dataset folder whose README declares the config's parquet files per split, a `translation` column
of `datasets.Translation` records), with crawled noise for --filter_pairs. What cannot run here is replaced, and only
that: 8 GPUs by one CPU process, bf16 dropped, the base model shrunk and 100,000 steps cut to 10."""

import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import datasets

from .conftest import ENGLISH, GERMAN

ROOT = Path(__file__).resolve().parents[1]
STAND_IN_CARD = """---
configs:
- config_name: de-en
  data_files:
  - split: train
    path: de-en/train-*
  - split: validation
    path: de-en/validation-*
  - split: test
    path: de-en/test-*
---
"""
SMALL = ("--config_overrides d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,"
         "decoder_attention_heads=2,encoder_ffn_dim=64,decoder_ffn_dim=64 --max_steps 10 --save_steps 2")


def readme_wmt14_commands() -> list[str]:
    section = ROOT.joinpath("README.md").read_text().split("## The paper's experiment: WMT14 en-de on GPUs")[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def write_stand_in(folder: Path) -> Path:
    rng = random.Random(0)
    features = datasets.Features({"translation": datasets.Translation(languages=["de", "en"])})
    sizes = {"train": 200, "validation": 12, "test": 12}
    for split, size in sizes.items():
        records = []
        for _ in range(size):
            pick = rng.randrange(len(GERMAN))
            records.append({"de": GERMAN[pick], "en": ENGLISH[pick]})
        if split == "train":  # what a crawl brings: an empty side, a runaway line
            records[5]["de"] = ""
            records[9]["en"] = " ".join(ENGLISH * 20)
        path = folder / "de-en" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict({"translation": records}, features=features).to_parquet(str(path))
    (folder / "README.md").write_text(STAND_IN_CARD)
    return folder


def test_the_readme_wmt14_commands_run_on_a_stand_in_of_the_dataset(tmp_path):
    stand_in = write_stand_in(tmp_path / "wmt14")
    commands = readme_wmt14_commands()
    assert [re.search(r"scripts/\w+\.py", c).group(0) for c in commands] == [
        "scripts/train_tokenizer.py", "scripts/run_translation.py", "scripts/average_checkpoints.py", "scripts/run_translation.py",
    ]
    for command in commands:
        command = command.replace("wmt/wmt14", str(stand_in)).replace(" --bf16", "")
        command = re.sub(r"^accelerate launch --multi_gpu --num_processes 8 ", "python ", command)
        if "--do_train" in command:
            command += " " + SMALL
        words = shlex.split(command)
        assert words[0] == "python", command
        script = ROOT / words[1]  # the outputs land in tmp_path, the working folder
        result = subprocess.run([sys.executable, script, *words[2:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"

    dropped = (tmp_path / "wmt14-base" / "dropped_train_pairs.tsv").read_text().splitlines()
    assert dropped == ["line\treason", "6\tempty side", "10\ttoo long"]
    predictions = (tmp_path / "wmt14-newstest2014" / "generated_predictions.txt").read_text().splitlines()
    assert len(predictions) == 12
    assert "predict_bleu" in (tmp_path / "wmt14-newstest2014" / "predict_results.json").read_text()
