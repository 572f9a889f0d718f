"""Train with a plain loop written with 🤗 Accelerate (see vanilla_transformer/accelerate_training.py), for those
who want their own loop: gradient accumulation, --mixed_precision, checkpoints with accelerator.save_state.

    python scripts/train_accelerate.py --tokenizer_name TOK --config_overrides d_model=256 --source_lang de \\
        --target_lang en --train_file DATA/train --max_steps 1000 --checkpointing_steps 200 --output_dir OUT
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/train_accelerate.py ...
    torchrun --nproc_per_node 2 scripts/train_accelerate.py ...      # two CPU processes on a machine without GPU
"""

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from transformers import HfArgumentParser
from vanilla_transformer.training import DataTrainingArguments, ModelArguments, log_progress_to_stderr
from vanilla_transformer.training.accelerate_loop import LoopArguments, train_with_accelerate


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, LoopArguments))
    model_args, data_args, loop_args = parser.parse_args_into_dataclasses()
    log_progress_to_stderr()
    train_with_accelerate(model_args, data_args, loop_args)


if __name__ == "__main__":
    main()
