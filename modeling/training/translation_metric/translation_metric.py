"""BLEU and chrF computed by sacrebleu, as an `evaluate` metric that ships inside the package so that it loads
offline: `evaluate.load(<path of this folder>)`, or `vanilla_transformer.training.evaluation.load_translation_metric()`."""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = """Corpus-level BLEU (Papineni et al., 2002) and chrF (Popovic, 2015) with sacrebleu's default settings
(13a tokenization for BLEU), the scores translation papers report. Each prediction may have several references."""

_INPUTS = """
Args:
    predictions: list of translations (detokenized text).
    references: list of lists of reference translations, the same number for every prediction.
Returns:
    bleu: corpus BLEU, 0-100. chrf: corpus chrF, 0-100. bleu_signature / chrf_signature: sacrebleu's signatures
    that make the scores reproducible.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class TranslationMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references):
        counts = {len(refs) for refs in references}
        if len(counts) != 1:
            raise ValueError("Every prediction needs the same number of references.")
        reference_streams = [list(stream) for stream in zip(*references)]  # sacrebleu wants one list per reference
        bleu = sacrebleu.metrics.BLEU()
        chrf = sacrebleu.metrics.CHRF()
        bleu_score = bleu.corpus_score(predictions, reference_streams)
        chrf_score = chrf.corpus_score(predictions, reference_streams)
        return {
            "bleu": bleu_score.score,
            "chrf": chrf_score.score,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
        }
