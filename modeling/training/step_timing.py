"""Timing training steps: batches of translation pairs made up on the spot, timed on the device, and the precision and
attention kernel that train fastest on this machine (the quick start picks its setup with `time_training_setups`; the
benchmark times its models on the same batches)."""

import time
from dataclasses import dataclass

import torch

from ..modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration
from .trainer import keep_freed_memory_for_reuse

PAD, BOS, EOS = 0, 1, 2  # the ids of the config's defaults


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    decoder_input_ids: torch.Tensor
    labels: torch.Tensor  # -100 at padding

    @property
    def target_tokens(self) -> int:
        return int((self.labels != -100).sum())

    def as_model_inputs(self) -> dict[str, torch.Tensor]:
        return dict(
            input_ids=self.input_ids, attention_mask=self.attention_mask, decoder_input_ids=self.decoder_input_ids,
            labels=self.labels,
        )


def translation_batch(pairs: int, vocab: int, seed: int, device: str, min_len: int = 8, max_len: int = 40) -> Batch:
    """Random pairs with independent source and target lengths in [min_len, max_len], right-padded."""
    generator = torch.Generator().manual_seed(seed)
    src_len = torch.randint(min_len, max_len + 1, (pairs,), generator=generator)
    tgt_len = torch.randint(min_len, max_len + 1, (pairs,), generator=generator)
    src = torch.randint(3, vocab, (pairs, int(src_len.max())), generator=generator)
    tgt = torch.randint(3, vocab, (pairs, int(tgt_len.max()) + 1), generator=generator)
    src_mask = torch.arange(src.shape[1])[None] < src_len[:, None]
    tgt[:, 0] = BOS
    tgt_mask = torch.arange(tgt.shape[1])[None] <= tgt_len[:, None]
    tgt = tgt.masked_fill(~tgt_mask, PAD)
    labels = tgt[:, 1:].masked_fill(~tgt_mask[:, 1:], -100)
    return Batch(
        src.masked_fill(~src_mask, PAD).to(device), src_mask.long().to(device), tgt[:, :-1].to(device), labels.to(device)
    )


def synchronize(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(function, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def setup_name(bf16: bool, attention: str) -> str:
    return f"{'bf16' if bf16 else 'fp32'}+{attention}"


def time_training_setups(config, tokens_per_batch: int, repeats: int = 3) -> dict[tuple[bool, str], float]:
    """Seconds of a training step (forward, backward, Adam) of `config`'s model on a batch of `tokens_per_batch` source
    tokens, by (bf16 mixed precision, attention kernel), the best of `repeats` after a warm-up. Which setup is fastest
    depends on the machine, not only on its instruction set: on two CPUs that both have AVX512-BF16, an AMD EPYC ran
    bf16 with eager attention 2.3x faster than fp32, and an Intel Xeon (no AMX) ran fp32 with sdpa 1.4x faster than
    bf16 (README). A bf16 GPU is timed too; a GPU without bf16 only in fp32."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        keep_freed_memory_for_reuse()  # time the steps as training will run them
    bf16_choices = (False, True) if device == "cpu" or torch.cuda.is_bf16_supported() else (False,)
    # Multi30k's sentences are about 16 tokens long, and batches group pairs of similar lengths
    batch = translation_batch(tokens_per_batch // 16, config.vocab_size, seed=0, device=device, min_len=16, max_len=16)
    step_seconds = {}
    for bf16 in bf16_choices:
        for attention in ("sdpa", "eager"):
            model = VanillaTransformerForConditionalGeneration._from_config(config, attn_implementation=attention)
            model.to(device).train()
            optimizer = torch.optim.AdamW(model.parameters())

            def step():
                with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                    loss = model(**batch.as_model_inputs()).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()

            step()
            step_seconds[bf16, attention] = min(timed(step, device) for _ in range(repeats))
    return step_seconds
