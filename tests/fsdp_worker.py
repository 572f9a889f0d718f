"""Trains a tiny model on fixed batches, either fully sharded with torch's `fully_shard` (FSDP 2) on the processes
that torchrun starts, each rank taking its own half of every step's batch, or on one unsharded process that
accumulates the gradients of both halves. Writes the per-step losses and the trained model (a full state dict,
gathered from the shards) to the output folder.

    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_worker.py OUT   # sharded
    python tests/fsdp_worker.py OUT                                              # the single-process reference
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

STEPS, HALVES, PAIRS_PER_HALF, VOCABULARY, PAD = 8, 2, 4, 40, 0


def tiny_model() -> VanillaTransformerForConditionalGeneration:
    torch.manual_seed(0)
    config = VanillaTransformerConfig(
        vocab_size=VOCABULARY, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
        dropout=0.0, pad_token_id=PAD, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )
    return VanillaTransformerForConditionalGeneration(config)


def half_batches() -> list[list[dict]]:
    """STEPS x HALVES padded batches with lengths that differ between the halves (so their token counts differ)."""
    generator = torch.Generator().manual_seed(1)
    steps = []
    for _ in range(STEPS):
        halves = []
        for _ in range(HALVES):
            source_lengths = torch.randint(3, 12, (PAIRS_PER_HALF,), generator=generator)
            target_lengths = torch.randint(3, 12, (PAIRS_PER_HALF,), generator=generator)
            input_ids = torch.randint(3, VOCABULARY, (PAIRS_PER_HALF, 12), generator=generator)
            labels = torch.randint(3, VOCABULARY, (PAIRS_PER_HALF, 12), generator=generator)
            source_mask = torch.arange(12) < source_lengths[:, None]
            input_ids[~source_mask] = PAD
            labels[torch.arange(12) >= target_lengths[:, None]] = -100
            halves.append(dict(input_ids=input_ids, attention_mask=source_mask.long(), labels=labels))
        steps.append(halves)
    return steps


def main(output_dir: Path) -> None:
    sharded = "WORLD_SIZE" in os.environ
    model = tiny_model()
    if sharded:
        dist.init_process_group("gloo")
        assert dist.get_world_size() == HALVES
        # The shard units of scripts/accelerate_configs/fsdp.yaml: each layer, and the root holding the embeddings
        # that the LM head shares
        for layer in [*model.model.encoder.layers, *model.model.decoder.layers]:
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9)

    losses = []
    for halves in half_batches():
        # Sharded, each rank's gradient is averaged over the ranks: the reference scales each half's loss by 1/2
        mine = [halves[dist.get_rank()]] if sharded else halves
        step_loss = torch.zeros(())
        for batch in mine:
            loss = model(**batch).loss / len(mine)
            loss.backward()
            step_loss += loss.detach()
        if sharded:
            dist.all_reduce(step_loss, op=dist.ReduceOp.AVG)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(step_loss.item())

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not sharded or dist.get_rank() == 0:
        unsharded = tiny_model()
        unsharded.load_state_dict(state)
        unsharded.save_pretrained(output_dir)
        (output_dir / "losses.json").write_text(json.dumps(losses) + "\n")
    if sharded:
        print(f"fsdp_worker finished on rank {dist.get_rank()} of {dist.get_world_size()}", flush=True)
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
