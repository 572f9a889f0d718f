"""Training: the Seq2SeqTrainer pipeline of `run_translation` (the flags of transformers' example script), the
Accelerate loop, checkpoints (completeness, averaging), the BLEU / chrF metric, timing a training step, and sharing a
trained model on the Hub with its card.

The names below are those that `vanilla_transformer.training` held before the package had folders.
"""

from .trainer import (
    DataTrainingArguments,
    ModelArguments,
    TranslationTrainer,
    keep_freed_memory_for_reuse,
    log_progress_to_stderr,
    noam_peak_learning_rate,
    run_translation,
    use_cpu_when_no_accelerator,
)

__all__ = [
    "DataTrainingArguments",
    "ModelArguments",
    "TranslationTrainer",
    "keep_freed_memory_for_reuse",
    "log_progress_to_stderr",
    "noam_peak_learning_rate",
    "run_translation",
    "use_cpu_when_no_accelerator",
]
