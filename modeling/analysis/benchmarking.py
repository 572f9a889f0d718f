"""Speed and memory, measured side by side: our model (eager and sdpa attention), transformers' `MarianMTModel`
(sdpa) with identical dimensions, and the PyTorch tutorial's `nn.Transformer` model, on the same batches, in one
process, interleaved (A B C D A B C D ...) after warm-up.

Figures:
- training: forward + backward + Adam step on translation batches (64 pairs, lengths 8-40, padded), in target
  (non-padding) tokens per second;
- greedy and beam-4 generation: 32 new tokens for 16 padded sources, in new tokens per second (the tutorial's greedy
  decode has no cache and no beam search);
- peak memory of a training step: the high-water mark above the memory held before it, once Adam's state exists
  (on CPU the resident memory of a fresh process per model, with glibc returning freed blocks at once; on GPU
  `torch.cuda.max_memory_allocated`);
- MFU: model FLOPs per second over the machine's measured fp32 (or --dtype) matmul peak. Model FLOPs count the
  useful work only, from the dimensions and the real (non-padding) tokens: see `training_flops`. Padding that a
  model computes anyway therefore lowers its MFU.
"""

import json
import os
import resource
import statistics
import subprocess
import sys

import torch
import torch.nn.functional as F
from transformers import MarianConfig, MarianMTModel

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from .pytorch_tutorial import TutorialSeq2SeqTransformer
from ..modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration
from ..training.step_timing import BOS, EOS, PAD, Batch, timed, translation_batch

SIZES = {
    "tiny": dict(d_model=256, layers=3, heads=4, ffn=1024, vocab=8000),
    "base": dict(d_model=512, layers=6, heads=8, ffn=2048, vocab=16000),
    # Helsinki-NLP/opus-mt-de-en's dimensions and vocabulary
    "opus-mt-base": dict(d_model=512, layers=6, heads=8, ffn=2048, vocab=58101),
}
MODELS = ("ours-eager", "ours-sdpa", "marian-sdpa", "m2m100-sdpa", "tutorial")
# The paper's model against MarianMTModel of its dimensions, or a pretrained family's layout converted from the
# family's own class (conversion/pretrained.py), against that class
LAYOUTS = {"paper": "marian-sdpa", "opus-mt": "marian-sdpa", "m2m100": "m2m100-sdpa"}


def default_models(layout: str) -> list[str]:
    return ["ours-eager", "ours-sdpa", LAYOUTS[layout]] + (["tutorial"] if layout == "paper" else [])


def pretrained_layout_model(layout: str, size: str):
    """transformers' own class of a pretrained family with that family's switches at `size`: opus-mt's
    MarianMTModel (swish, sines first, a logits bias) or NLLB's M2M100ForConditionalGeneration (pre-LN with final
    LayerNorms, fairseq's positions)."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    s = SIZES[size]
    dimensions = dict(
        vocab_size=s["vocab"], d_model=s["d_model"], encoder_layers=s["layers"], decoder_layers=s["layers"],
        encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"], encoder_ffn_dim=s["ffn"],
        decoder_ffn_dim=s["ffn"], dropout=0.1, scale_embedding=True, max_position_embeddings=256, pad_token_id=PAD,
        eos_token_id=EOS, decoder_start_token_id=BOS, forced_eos_token_id=None,
    )
    if layout == "opus-mt":
        model = MarianMTModel(MarianConfig(activation_function="swish", **dimensions))
        with torch.no_grad():
            model.final_logits_bias.normal_()
    else:
        model = M2M100ForConditionalGeneration(
            M2M100Config(activation_function="relu", encoder_layerdrop=0.0, decoder_layerdrop=0.0, attention_dropout=0.0, **dimensions)
        )
    model.set_attn_implementation("sdpa")
    return model


def build(name: str, size: str, device: str, dtype: torch.dtype, layout: str = "paper"):
    """The model `name` at `size`, with the same dimensions, vocabulary, tied embeddings and positions for all; with
    a pretrained `layout`, the family's class and ours converted from it, with the same weights."""
    s = SIZES[size]
    torch.manual_seed(0)
    if layout != "paper":
        if name == "tutorial" or (not name.startswith("ours") and name != LAYOUTS[layout]):
            raise ValueError(f"The {layout} layout compares ours with {LAYOUTS[layout]}, not {name}.")
        from ..conversion.pretrained import from_pretrained_translator

        model = pretrained_layout_model(layout, size)
        if name.startswith("ours"):
            model = from_pretrained_translator(model)
            model.set_attn_implementation(name.split("-")[1])
        return model.to(device=device, dtype=dtype)
    if name.startswith("ours"):
        config = VanillaTransformerConfig(
            vocab_size=s["vocab"], d_model=s["d_model"], encoder_layers=s["layers"], decoder_layers=s["layers"],
            encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"], encoder_ffn_dim=s["ffn"],
            decoder_ffn_dim=s["ffn"], max_position_embeddings=256,
        )
        model = VanillaTransformerForConditionalGeneration(config)
        model.set_attn_implementation(name.split("-")[1])
    elif name == "marian-sdpa":
        config = MarianConfig(
            vocab_size=s["vocab"], d_model=s["d_model"], encoder_layers=s["layers"], decoder_layers=s["layers"],
            encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"], encoder_ffn_dim=s["ffn"],
            decoder_ffn_dim=s["ffn"], activation_function="relu", dropout=0.1, scale_embedding=True,
            max_position_embeddings=256, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=BOS,
            share_encoder_decoder_embeddings=True, tie_word_embeddings=True, forced_eos_token_id=None,
        )
        model = MarianMTModel(config)
        model.set_attn_implementation("sdpa")
    else:
        model = TutorialSeq2SeqTransformer(
            s["vocab"], s["vocab"], s["d_model"], s["heads"], s["layers"], s["layers"], s["ffn"],
            shared_embeddings=True, pad_token_id=PAD, max_len=256,
        )
        model.generator.weight = model.tgt_tok_emb.embedding.weight  # tied, as the others
    return model.to(device=device, dtype=dtype)


def training_loss(name: str, model, batch: Batch) -> torch.Tensor:
    if name == "tutorial":
        logits = model(batch.input_ids, batch.decoder_input_ids)
        return F.cross_entropy(logits.flatten(0, 1).float(), batch.labels.flatten(), ignore_index=-100)
    return model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=batch.decoder_input_ids,
        labels=batch.labels,
    ).loss


def generate(name: str, model, batch: Batch, num_beams: int, new_tokens: int) -> torch.Tensor:
    if name == "tutorial":
        return model.greedy_decode(batch.input_ids, BOS, new_tokens)
    return model.generate(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, num_beams=num_beams, do_sample=False,
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None, forced_eos_token_id=None,
        length_penalty=1.0, early_stopping=False,
    )


def measure_matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of the best of `repeats` n x n matrix products: the machine's practical peak for this dtype."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / best


def training_flops(size: str, batch: Batch) -> float:
    """Useful FLOPs of one training step, from the dimensions alone (so the same for every implementation): forward
    + backward = 3 x forward, and a forward costs 2 FLOPs per multiply-add. Per real source token the encoder's
    matmuls (4 d^2 + 2 d d_ff per layer); per real target token the decoder's (8 d^2 + 2 d d_ff per layer) and the
    pre-softmax projection (d V); per pair of real tokens that attend, QK^T and AV (2 d), over the encoder's
    self-attention, the decoder's causal self-attention and its cross-attention."""
    s = SIZES[size]
    d, ffn, layers, vocab = s["d_model"], s["ffn"], s["layers"], s["vocab"]
    src = batch.attention_mask.sum(-1).double()
    tgt = (batch.labels != -100).sum(-1).double()
    encoder = layers * (4 * d * d + 2 * d * ffn) * src.sum()
    decoder = (layers * (8 * d * d + 2 * d * ffn) + d * vocab) * tgt.sum()
    attention_pairs = layers * ((src * src).sum() + (tgt * (tgt + 1) / 2).sum() + (tgt * src).sum())
    return float(6 * (encoder + decoder) + 6 * 2 * d * attention_pairs)


def benchmark(
    size: str, device: str, dtype: torch.dtype, threads: int, repeats: int, warmup: int, models=None, layout: str = "paper"
) -> dict:
    torch.set_num_threads(threads)
    models = models or default_models(layout)
    batches = [translation_batch(64, SIZES[size]["vocab"], seed, device) for seed in range(4)]
    sources = translation_batch(16, SIZES[size]["vocab"], 100, device)
    built = {name: build(name, size, device, dtype, layout) for name in models}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in built.items()}
    results = {name: {"train": [], "greedy": [], "beam4": []} for name in models}

    def train_step(name, batch):
        model = built[name].train()
        loss = training_loss(name, model, batch)
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    def generation(name, beams):
        with torch.no_grad():
            generate(name, built[name].eval(), sources, beams, 32)

    for step in range(warmup + repeats):  # interleaved: every model runs each round, in turn
        batch = batches[step % len(batches)]
        for name in models:
            seconds = timed(lambda: train_step(name, batch), device)
            if step >= warmup:
                results[name]["train"].append(batch.target_tokens / seconds)
        for name in models:
            seconds = timed(lambda: generation(name, 1), device)
            if step >= warmup:
                results[name]["greedy"].append(16 * 32 / seconds)
        for name in models:
            if name == "tutorial":
                continue
            seconds = timed(lambda: generation(name, 4), device)
            if step >= warmup:
                results[name]["beam4"].append(16 * 32 / seconds)

    peak = measure_matmul_peak(device, dtype)
    summary = {"size": size, "layout": layout, "device": device, "dtype": str(dtype).removeprefix("torch."), "threads": threads, "matmul_peak_flops": peak, "models": {}}
    for name in models:
        entry = {}
        for figure, values in results[name].items():
            if values:
                entry[figure] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        flops_per_token = statistics.mean(training_flops(size, b) / b.target_tokens for b in batches)
        entry["train_mfu"] = entry["train"]["median"] * flops_per_token / peak
        entry["train_peak_memory_bytes"] = peak_training_memory(name, size, device, dtype, threads, layout)
        summary["models"][name] = entry
    ours, reference = summary["models"].get("ours-sdpa"), summary["models"].get(LAYOUTS[layout])
    if ours and reference:
        summary["reference"] = LAYOUTS[layout]
        summary["ratios"] = {
            figure: ours[figure]["median"] / reference[figure]["median"] for figure in ("train", "greedy", "beam4")
        }
        summary["ratios"]["train_peak_memory"] = ours["train_peak_memory_bytes"] / reference["train_peak_memory_bytes"]
    return summary


def peak_training_memory(name: str, size: str, device: str, dtype: torch.dtype, threads: int, layout: str = "paper") -> int:
    """Peak memory of training steps above what the process held before them, measured in a fresh process so that
    the other models' allocations do not count."""
    code = (
        "import json, sys; from vanilla_transformer.analysis.benchmarking import measure_peak_memory_here; "
        f"print(json.dumps(measure_peak_memory_here({name!r}, {size!r}, {device!r}, {str(dtype).removeprefix('torch.')!r}, {threads}, {layout!r})))"
    )
    # A fixed mmap threshold makes glibc hand large freed blocks back at once, so resident memory follows the
    # tensors alive at each moment (by default it keeps them, and the step's peak would hide in the baseline)
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_peak_memory_here(name: str, size: str, device: str, dtype: str, threads: int, layout: str = "paper") -> int:
    torch.set_num_threads(threads)
    model = build(name, size, device, getattr(torch, dtype), layout).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = translation_batch(64, SIZES[size]["vocab"], 0, device)
    # One step first, so that Adam's state exists: what is measured is what every later step needs on top
    for step in range(3):
        if step == 1:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            else:
                before = _resident_bytes()
                _reset_peak_resident()
        loss = training_loss(name, model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() - before
    return _peak_resident_bytes() - before


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def _reset_peak_resident() -> None:
    # Linux's resettable high-water mark; getrusage's ru_maxrss cannot be reset, and a child process even inherits
    # its parent's across exec
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak_resident_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM: peak memory on CPU needs Linux")


def format_table(summary: dict) -> str:
    lines = [
        f"size {summary['size']}, layout {summary['layout']}, {summary['device']} {summary['dtype']}, {summary['threads']} threads, "
        f"matmul peak {summary['matmul_peak_flops'] / 1e9:.0f} GFLOP/s",
        f"{'model':<12} {'train tok/s (min-max)':>26} {'greedy tok/s (min-max)':>26} {'beam4 tok/s (min-max)':>26} {'MFU':>6} {'peak MB':>8}",
    ]
    for name, entry in summary["models"].items():
        cells = []
        for figure in ("train", "greedy", "beam4"):
            value = entry.get(figure)
            cells.append(f"{value['median']:>8.0f} ({value['min']:.0f}-{value['max']:.0f})" if value else "-")
        lines.append(
            f"{name:<12} {cells[0]:>26} {cells[1]:>26} {cells[2]:>26} {100 * entry['train_mfu']:>5.1f}% "
            f"{entry['train_peak_memory_bytes'] / 2**20:>8.0f}"
        )
    if "ratios" in summary:
        lines.append(f"ours-sdpa / {summary['reference']}: " + ", ".join(f"{k} {v:.2f}x" for k, v in summary["ratios"].items()))
    return "\n".join(lines)


def profile_training(size: str, device: str, dtype: torch.dtype, threads: int, name: str = "ours-sdpa", steps: int = 3) -> str:
    """The torch profiler's table of where a training step's time goes."""
    torch.set_num_threads(threads)
    model = build(name, size, device, dtype).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = translation_batch(64, SIZES[size]["vocab"], 0, device)

    def step():
        training_loss(name, model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
    sort = "cuda_time_total" if device.startswith("cuda") else "cpu_time_total"
    return profiler.key_averages().table(sort_by=sort, row_limit=30)


def profile_generation(
    size: str, device: str, dtype: torch.dtype, threads: int, num_beams: int, models=("ours-sdpa", "marian-sdpa")
) -> str:
    """Where a generation call's time goes, model beside model: matrix products (the same work for models of the
    same dimensions), the attention kernels, the other tensor operations, and the rest (Python, the generation loop,
    dispatch), as the torch profiler sees them on CPU."""
    torch.set_num_threads(threads)
    sources = translation_batch(16, SIZES[size]["vocab"], 100, device)
    lines = [f"{'model':<12} {'generate s':>10} {'matmuls':>8} {'attention':>10} {'other ops':>10} {'rest':>6}"]
    for name in models:
        model = build(name, size, device, dtype).eval()
        with torch.no_grad():
            generate(name, model, sources, num_beams, 32)  # warm-up
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
                seconds = timed(lambda: generate(name, model, sources, num_beams, 32), device)
        shares = {"matmuls": 0.0, "attention": 0.0, "other ops": 0.0}
        for event in profiler.key_averages():
            if not event.key.startswith("aten::"):
                continue
            if event.key in ("aten::mm", "aten::addmm", "aten::bmm"):
                kind = "matmuls"
            elif "scaled_dot_product" in event.key or event.key == "aten::_softmax":
                kind = "attention"
            else:
                kind = "other ops"
            shares[kind] += event.self_cpu_time_total / 1e6
        shares["rest"] = seconds - sum(shares.values())
        percents = [f"{100 * value / seconds:.0f}%" for value in shares.values()]
        lines.append(f"{name:<12} {seconds:>10.3f} {percents[0]:>8} {percents[1]:>10} {percents[2]:>10} {percents[3]:>6}")
    return f"{'greedy' if num_beams == 1 else f'beam-{num_beams}'} generation, 32 new tokens for 16 sources:\n" + "\n".join(lines)
