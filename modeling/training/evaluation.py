"""Translation quality: BLEU and chrF through `evaluate`, with the metric module shipped in the package (no
download), and the `compute_metrics` hook that turns the Trainer's generated ids into those scores."""

from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction, PreTrainedTokenizerBase

METRIC_PATH = Path(__file__).parent / "translation_metric"


def load_translation_metric() -> evaluate.EvaluationModule:
    """The sacrebleu BLEU + chrF metric, loaded from the package's own copy: works offline."""
    return evaluate.load(str(METRIC_PATH))


def decode_for_metrics(tokenizer: PreTrainedTokenizerBase, ids: np.ndarray) -> list[str]:
    """Generated or label ids (-100 where the Trainer padded them) to stripped text."""
    ids = np.where(ids < 0, tokenizer.pad_token_id, ids)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


class TranslationMetrics:
    """`compute_metrics` for a `Seq2SeqTrainer` run with `predict_with_generate`: BLEU, chrF and the mean length
    of the generated translations in tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.metric = load_translation_metric()

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        predictions = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        hypotheses = decode_for_metrics(self.tokenizer, predictions)
        references = decode_for_metrics(self.tokenizer, prediction.label_ids)
        scores = self.metric.compute(predictions=hypotheses, references=[[reference] for reference in references])
        lengths = (np.where(predictions < 0, self.tokenizer.pad_token_id, predictions) != self.tokenizer.pad_token_id)
        return {"bleu": scores["bleu"], "chrf": scores["chrf"], "gen_len": float(lengths.sum(-1).mean())}
