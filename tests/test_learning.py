"""The whole model learns: a tiny Transformer masters reversing sequences of symbols in a few hundred CPU steps."""

import torch
from vanilla_transformer.data.toy_tasks import exact_match, reverse_task, train_on_reverse_task

from .conftest import tiny_model


def test_tiny_model_learns_to_reverse_sequences_exactly():
    model = tiny_model("sdpa", vocab_size=16, d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, dropout=0.0)
    losses = []
    train_on_reverse_task(model, steps=400, on_step=lambda step, loss: losses.append(loss))
    assert losses[-1] < losses[0] / 50

    input_ids, attention_mask, labels = reverse_task(200, torch.Generator().manual_seed(1234))  # unseen sources
    with torch.no_grad():
        predictions = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10, do_sample=False
        )
    assert exact_match(predictions, labels) == 1.0
