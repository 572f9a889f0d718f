"""Train, evaluate and translate with the Seq2SeqTrainer, with the flags of the transformers example
`run_translation.py` (see README.md for the Multi30k recipe and the paper's flags). Runs unchanged under
`torchrun --nproc_per_node N` or `accelerate launch` (several GPUs, or several CPU processes with torchrun).

    python scripts/run_translation.py --config_name CONFIG --tokenizer_name TOKENIZER \\
        --source_lang de --target_lang en --train_file DATA/train --validation_file DATA/val \\
        --do_train --do_eval --predict_with_generate --output_dir OUT
"""

import sys

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from transformers import HfArgumentParser, Seq2SeqTrainingArguments
from vanilla_transformer.training import (
    DataTrainingArguments,
    ModelArguments,
    log_progress_to_stderr,
    run_translation,
    use_cpu_when_no_accelerator,
)


def main():
    use_cpu_when_no_accelerator()
    log_progress_to_stderr()
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, Seq2SeqTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=sys.argv[1])
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    run_translation(model_args, data_args, training_args)
    print(f"run_translation finished on rank {training_args.process_index} of {training_args.world_size}", flush=True)


if __name__ == "__main__":
    main()
