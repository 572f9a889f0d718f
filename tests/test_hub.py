"""Push and pull over real HTTP, against the local Hub server of `hub_server.py` (HF_ENDPOINT on 127.0.0.1): the
clients are the real `huggingface_hub` / `transformers`, each run in its own process as a user would run them."""

import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, Seq2SeqTrainingArguments
from vanilla_transformer.training import DataTrainingArguments, ModelArguments, run_translation

from .hub_server import HubServer
from .translation_fixtures import SOURCE, TARGET, TINY_MODEL, write_numbers_data, write_tokenizer

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TOKENS = {"alice-token": "alice", "bob-token": "bob"}
SOURCES = ["40021", "7", "123456"]

# Runs in a process that cannot import vanilla_transformer: loads a model, translates, saves what it computed
PULL = textwrap.dedent(
    """
    import sys, torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    try:
        import vanilla_transformer
        sys.exit("vanilla_transformer is importable here")
    except ImportError:
        pass
    repo, revision, trust, out = sys.argv[1:5]
    tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision)
    kwargs = {"trust_remote_code": True} if trust == "trust" else {}
    model = AutoModelForSeq2SeqLM.from_pretrained(repo, revision=revision, **kwargs).eval()
    batch = tokenizer(%r, return_tensors="pt", padding=True)
    with torch.no_grad():
        tokens = model.generate(**batch, max_new_tokens=8, num_beams=2)
        logits = model(**batch, decoder_input_ids=tokens).logits
    torch.save({"tokens": tokens, "logits": logits, "module": type(model).__module__}, out)
    """
    % SOURCES
)


@pytest.fixture(scope="module")
def hub():
    with HubServer(TOKENS) as server:
        yield server


@pytest.fixture(scope="module")
def without_package(tmp_path_factory):
    """PYTHONPATH for `python -S`: every site-packages entry except vanilla_transformer's."""
    farm = tmp_path_factory.mktemp("site-without-vanilla-transformer")
    for directory in [*site.getsitepackages(), site.getusersitepackages()]:
        if not Path(directory).is_dir():
            continue
        for entry in Path(directory).iterdir():
            if not entry.name.startswith("vanilla_transformer") and not (farm / entry.name).exists():
                (farm / entry.name).symlink_to(entry)
    return farm


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained model directory (model + tokenizer), as a training run leaves it."""
    folder = tmp_path_factory.mktemp("trained")
    prefixes = write_numbers_data(folder)
    run_translation(*run_arguments(prefixes, write_tokenizer(folder / "tokenizer", prefixes), folder / "model"))
    return folder / "model"


def run_arguments(prefixes, tokenizer, output_dir, **training):
    return (
        ModelArguments(tokenizer_name=str(tokenizer), config_overrides=TINY_MODEL),
        DataTrainingArguments(
            source_lang=SOURCE, target_lang=TARGET, train_file=str(prefixes["train"]),
            max_source_length=32, max_target_length=32, max_tokens_per_batch=160,
        ),
        Seq2SeqTrainingArguments(
            output_dir=str(output_dir), do_train=True, max_steps=3, save_strategy="no", report_to="none",
            disable_tqdm=True, **training,
        ),
    )


def environment(hub, home, token="alice-token"):
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1")
    if token:
        env["HF_TOKEN"] = token
    return env


def push(hub, home, model_dir, repo_id, *extra, token="alice-token"):
    return subprocess.run(
        [sys.executable, SCRIPTS / "push_to_hub.py", "--model_dir", model_dir, "--repo_id", repo_id, *extra],
        capture_output=True, text=True, env=environment(hub, home, token), timeout=300,
    )


def pull_without_package(hub, home, without_package, repo, out, revision="main", trust="trust", token="alice-token", offline=False):
    env = environment(hub, home, token)
    env["PYTHONPATH"] = str(without_package)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-S", "-c", PULL, repo, revision, trust, out], capture_output=True, text=True, env=env, timeout=300
    )


def reference_outputs(model_dir):
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        tokens = model.generate(**batch, max_new_tokens=8, num_beams=2)
        logits = model(**batch, decoder_input_ids=tokens).logits
    return tokens, logits


def commit_of(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split("at commit ")[1].split(":")[0]


def test_pull_without_the_package_equals_the_original_bit_for_bit(hub, trained, without_package, tmp_path):
    first = commit_of(push(hub, tmp_path / "pusher", trained, "alice/numbers"))
    files = set(hub.state.repos["alice/numbers"]["commits"][first]["files"])
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md",
            "configuration_vanilla_transformer.py", "modeling_vanilla_transformer.py"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)  # weights only as safetensors
    assert "lfs" in hub.state.repos["alice/numbers"]["commits"][first]["files"]["model.safetensors"]
    config = json.loads(hub.state.repos["alice/numbers"]["commits"][first]["files"]["config.json"]["content"])
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSeq2SeqLM"}

    home = tmp_path / "puller"
    result = pull_without_package(hub, home, without_package, "alice/numbers", tmp_path / "pulled.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    pulled = torch.load(tmp_path / "pulled.pt")
    assert pulled["module"].startswith("transformers_modules.")  # the repo's own code ran
    tokens, logits = reference_outputs(trained)
    assert torch.equal(pulled["tokens"], tokens) and torch.equal(pulled["logits"], logits)

    # Once downloaded, the model loads offline from the cache, code included
    offline = pull_without_package(hub, home, without_package, "alice/numbers", tmp_path / "offline.pt", offline=True)
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "offline.pt")["logits"], logits)

    # Without trust_remote_code the library itself refuses, with its own message
    refused = pull_without_package(hub, tmp_path / "other", without_package, "alice/numbers", tmp_path / "x.pt", trust="no")
    assert refused.returncode != 0
    assert "trust_remote_code=True" in refused.stderr and "contains custom code" in refused.stderr
    assert "vanilla_transformer" not in refused.stderr.split("Traceback")[-1].split("\n")[-2]

    # A second push is a new commit; the first one still loads, exactly, by its sha
    changed = tmp_path / "changed"
    model = AutoModelForSeq2SeqLM.from_pretrained(trained)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)
    model.save_pretrained(changed)
    AutoTokenizer.from_pretrained(trained).save_pretrained(changed)
    second = commit_of(push(hub, tmp_path / "pusher", changed, "alice/numbers", "--commit_message", "scale"))
    assert second != first and hub.state.commit_count("alice/numbers") == 3  # the initial commit + two pushes
    pinned = pull_without_package(hub, home, without_package, "alice/numbers", tmp_path / "pinned.pt", revision=first)
    assert pinned.returncode == 0, pinned.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "pinned.pt")["logits"], logits)
    latest = pull_without_package(hub, home, without_package, "alice/numbers", tmp_path / "latest.pt")
    assert latest.returncode == 0, latest.stderr[-3000:]
    assert not torch.equal(torch.load(tmp_path / "latest.pt")["logits"], logits)


def test_with_the_package_installed_both_ways_use_the_installed_classes(hub, trained, tmp_path):
    commit_of(push(hub, tmp_path / "pusher", trained, "alice/installed"))
    code = (
        "import sys, vanilla_transformer\nfrom transformers import AutoModelForSeq2SeqLM\n"
        "for kwargs in ({}, {'trust_remote_code': True}):\n"
        "    print(type(AutoModelForSeq2SeqLM.from_pretrained('alice/installed', **kwargs)).__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment(hub, tmp_path / "h"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["vanilla_transformer.modeling_vanilla_transformer"] * 2


def test_model_card_has_metadata_and_a_usage_snippet_that_runs(hub, trained, without_package, tmp_path):
    commit_of(push(hub, tmp_path / "pusher", trained, "alice/card", "--language", "en", "--dataset", "numbers", "--example", "40021"))
    card = hub.state.repos["alice/card"]["commits"][hub.state.repos["alice/card"]["branches"]["main"]]["files"]["README.md"]["content"].decode()
    metadata = card.split("---")[1]
    for field in ("library_name: transformers", "license: apache-2.0", "pipeline_tag: translation", "- vanilla-transformer", "- en", "- numbers"):
        assert field in metadata
    snippet = card.split("```python\n")[1].split("```")[0]  # exactly as written in the card
    assert "'40021'" in snippet
    env = environment(hub, tmp_path / "snippet")
    env["PYTHONPATH"] = str(without_package)
    result = subprocess.run([sys.executable, "-S", "-c", snippet], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("[")  # the printed translations


def test_trainer_push_to_hub_produces_a_loadable_repo(hub, without_package, tmp_path):
    prefixes = write_numbers_data(tmp_path)
    tokenizer = write_tokenizer(tmp_path / "tokenizer", prefixes)
    arguments = [
        "--tokenizer_name", tokenizer, "--config_overrides", TINY_MODEL, "--source_lang", SOURCE, "--target_lang", TARGET,
        "--train_file", prefixes["train"], "--validation_file", prefixes["val"], "--max_source_length", "32",
        "--max_target_length", "32", "--max_tokens_per_batch", "160", "--do_train", "--do_eval", "--predict_with_generate",
        "--max_steps", "3", "--save_strategy", "no", "--report_to", "none", "--output_dir", tmp_path / "run",
        "--push_to_hub", "--hub_model_id", "alice/trained", "--disable_tqdm", "true",
    ]
    result = subprocess.run(
        [sys.executable, SCRIPTS / "run_translation.py", *arguments], capture_output=True, text=True,
        env=environment(hub, tmp_path / "trainer"), timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub.state.repos["alice/trained"]["commits"][hub.state.repos["alice/trained"]["branches"]["main"]]["files"]
    assert "modeling_vanilla_transformer.py" in files and "model.safetensors" in files
    card = files["README.md"]["content"].decode()
    assert "pipeline_tag: translation" in card and "| bleu |" in card and "trust_remote_code=True" in card
    pulled = pull_without_package(hub, tmp_path / "puller", without_package, "alice/trained", tmp_path / "pulled.pt")
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    tokens, logits = reference_outputs(tmp_path / "run")
    assert torch.equal(torch.load(tmp_path / "pulled.pt")["logits"], logits)


def test_private_repos_and_bad_tokens(hub, trained, without_package, tmp_path):
    commit_of(push(hub, tmp_path / "pusher", trained, "alice/secret", "--private"))
    stranger = pull_without_package(hub, tmp_path / "s", without_package, "alice/secret", tmp_path / "s.pt", token=None)
    assert stranger.returncode != 0 and "alice/secret" in stranger.stderr
    other = pull_without_package(hub, tmp_path / "b", without_package, "alice/secret", tmp_path / "b.pt", token="bob-token")
    assert other.returncode != 0
    owner = pull_without_package(hub, tmp_path / "a", without_package, "alice/secret", tmp_path / "a.pt")
    assert owner.returncode == 0, owner.stderr[-3000:]

    commits = hub.state.commit_count("alice/secret")
    bad = push(hub, tmp_path / "pusher", trained, "alice/secret", token="wrong-token")
    assert bad.returncode != 0 and "Invalid credentials" in bad.stderr
    foreign = push(hub, tmp_path / "pusher", trained, "alice/secret", token="bob-token")
    assert foreign.returncode != 0
    assert hub.state.commit_count("alice/secret") == commits  # no partial commit left behind
    assert "alice/never" not in hub.state.repos or hub.state.commit_count("alice/never") == 0


def test_push_refuses_a_directory_that_is_not_a_model_before_uploading(hub, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "config.json").write_text("{}")
    result = push(hub, tmp_path / "pusher", tmp_path / "notes", "alice/nothing")
    assert result.returncode != 0 and "does not load as a model with its tokenizer" in result.stderr
    assert "alice/nothing" not in hub.state.repos


def test_push_to_a_branch(hub, trained, tmp_path):
    commit = commit_of(push(hub, tmp_path / "pusher", trained, "alice/branches", "--revision", "experiment"))
    repo = hub.state.repos["alice/branches"]
    assert repo["branches"]["experiment"] == commit and repo["branches"]["main"] != commit
