"""Quick start: build a small Transformer through the Auto classes, teach it to reverse sequences (about 10 seconds
on 2 CPU cores), save it, reload it with `AutoModelForSeq2SeqLM` and let it translate sequences it never saw.

    python scripts/quickstart.py [--output_dir DIR] [--steps N]
"""

import argparse

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSeq2SeqLM

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.toy_tasks import exact_match, reverse_task, train_on_reverse_task


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="quickstart-model", help="where the trained model is saved")
    parser.add_argument("--steps", type=int, default=400, help="training steps of 64 sequences each")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "vanilla_transformer",
        vocab_size=16,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        dropout=0.0,
        max_position_embeddings=64,
    )
    model = AutoModelForSeq2SeqLM.from_config(config)
    print(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters")

    with tqdm(total=args.steps, desc="training") as progress:

        def on_step(step, loss):
            progress.update()
            progress.set_postfix(loss=f"{loss:.3f}")

        train_on_reverse_task(model, steps=args.steps, on_step=on_step)

    model.save_pretrained(args.output_dir)
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(args.output_dir).eval()
    print(f"saved to {args.output_dir}/ and reloaded as {type(reloaded).__name__}")

    input_ids, attention_mask, labels = reverse_task(500, torch.Generator().manual_seed(1234))
    with torch.no_grad():
        predictions = reloaded.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10, num_beams=4
        )
    for row in range(3):
        source = input_ids[row][attention_mask[row].bool()].tolist()
        output = [token for token in predictions[row, 1:].tolist() if token > config.eos_token_id]
        print(f"  {source} -> {output}")
    print(f"exact-match: {100 * exact_match(predictions, labels):.1f}%")


if __name__ == "__main__":
    main()
