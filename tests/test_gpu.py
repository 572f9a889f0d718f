"""On a GPU: mixed precision, the fused attention kernels, cached generation, FSDP and CTranslate2 compute what the
fp32 eager model computes. Marked `gpu`; they skip, saying why, where CUDA is absent (`scripts/gpu_check.sh` runs
them on a GPU machine)."""

import importlib.util

import pytest
import torch

from .conftest import padded_batch, tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh on a GPU machine)"),
]
LENGTHS = [9, 5, 12, 3, 7, 12, 1, 10]


def training_batch(device):
    input_ids, attention_mask = padded_batch(LENGTHS, seed=1)
    labels, _ = padded_batch(LENGTHS[::-1], seed=2)
    labels = labels.masked_fill(labels == 0, -100)
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device), "labels": labels.to(device)}


def one_training_step(dtype: torch.dtype, attn_implementation: str = "eager") -> tuple[float, dict]:
    """The loss of a step of the tiny model under autocast in `dtype`, and its gradients in fp32."""
    model = tiny_model(attn_implementation, dropout=0.0).cuda().train()
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**training_batch("cuda")).loss
    loss.backward()
    return loss.item(), {name: p.grad.float().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)], ids=["bf16", "fp16"])
def test_a_mixed_precision_training_step_equals_fp32_within_its_precision(dtype, tolerance):
    reference_loss, reference_grads = one_training_step(torch.float32)
    loss, grads = one_training_step(dtype)
    assert loss == pytest.approx(reference_loss, rel=tolerance)
    for name, grad in grads.items():
        scale = reference_grads[name].abs().max().clamp_min(1e-6)
        assert (grad - reference_grads[name]).abs().max() / scale < 10 * tolerance, name


KERNELS = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_fused_kernels_give_the_eager_logits(kernel):
    dtype = torch.bfloat16 if kernel.startswith("flash") else torch.float32  # flash attention runs in half precision
    eager = tiny_model("eager").cuda().to(dtype)
    fused = tiny_model(kernel).cuda().to(dtype)
    batch = training_batch("cuda")
    with torch.no_grad():
        expected, got = eager(**batch).logits.float(), fused(**batch).logits.float()
    real = batch["labels"] != -100
    assert (got - expected)[real].abs().max() < (1e-4 if dtype == torch.float32 else 5e-2)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_cached_generation_equals_generation_without_the_cache_on_the_gpu(num_beams):
    model = tiny_model("sdpa").cuda()
    input_ids, attention_mask = (tensor.cuda() for tensor in padded_batch(LENGTHS, seed=3))
    settings = dict(num_beams=num_beams, max_new_tokens=12, do_sample=False)
    cached = model.generate(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **settings)
    uncached = model.generate(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **settings)
    assert torch.equal(cached, uncached)


def test_fsdp_on_one_gpu_trains_as_the_unsharded_model(monkeypatch):
    from torch.distributed.fsdp import fully_shard

    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29512", "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    torch.distributed.init_process_group("nccl")
    try:
        reference = tiny_model("sdpa", dropout=0.0).cuda().train()
        sharded = tiny_model("sdpa", dropout=0.0).cuda().train()
        for stack in (sharded.model.encoder, sharded.model.decoder):
            for layer in stack.layers:
                fully_shard(layer)
        fully_shard(sharded)
        losses = []
        for model in (reference, sharded):
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            steps = []
            for _ in range(3):
                loss = model(**training_batch("cuda")).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                steps.append(loss.item())
            losses.append(steps)
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    finally:
        torch.distributed.destroy_process_group()


def test_ctranslate2_on_cuda_translates_as_pytorch(tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    if ctranslate2.get_cuda_device_count() == 0:
        pytest.skip("this CTranslate2 build sees no CUDA device")
    from vanilla_transformer.serving import load_engine, translate
    from vanilla_transformer.serving.exports import export_model

    from .serving_fixtures import digit_strings, train_reverser

    model_dir = train_reverser(tmp_path / "model", steps=150)
    export_model(str(model_dir), "ctranslate2", str(tmp_path / "ct2"))
    sentences = digit_strings(64, seed=7)
    torch_engine, tokenizer = load_engine(str(model_dir), engine="torch", device="cuda")
    ct2_engine, ct2_tokenizer = load_engine(str(tmp_path / "ct2"), device="cuda")
    assert list(translate(ct2_engine, ct2_tokenizer, sentences)) == list(translate(torch_engine, tokenizer, sentences))
