"""Accuracy and macro F1 / precision / recall, as IndoNLU's `document_sentiment_metrics_fn` computes them.

A local `evaluate` module: `evaluate.load("f1")` needs the Hub, this one is loaded by path and works offline.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score
from sklearn.metrics import f1_score
from sklearn.metrics import precision_score
from sklearn.metrics import recall_score

_DESCRIPTION = """
Accuracy plus macro-averaged F1, precision and recall (scikit-learn `average="macro"`), the metrics IndoNLU reports
for SmSA. Macro averaging weighs the rare neutral class as much as the frequent positive class.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted label ids.
    references (`list` of `int`): gold label ids.
    labels (`list` of `int`, optional): the label ids to average over. Default: those present in predictions or
        references, exactly as the IndoNLU tutorial computes them.
Returns:
    accuracy, f1, precision, recall (`float`, 0..1). Classes never predicted count as precision 0.
Examples:
    >>> metric = evaluate.load("path/to/sentiment_metrics")
    >>> metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])["accuracy"]
    0.75
"""

_CITATION = """
@inproceedings{wilie2020indonlu,
  title={IndoNLU: Benchmark and Resources for Evaluating Indonesian Natural Language Understanding},
  author={Wilie, Bryan and Vincentio, Karissa and Winata, Genta Indra and others},
  booktitle={Proceedings of AACL-IJCNLP 2020},
  year={2020}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SentimentMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://github.com/IndoNLP/indonlu/blob/master/utils/metrics.py"],
        )

    def _compute(self, predictions, references, labels=None):
        macro = {"labels": labels, "average": "macro", "zero_division": 0}
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "f1": float(f1_score(references, predictions, **macro)),
            "precision": float(precision_score(references, predictions, **macro)),
            "recall": float(recall_score(references, predictions, **macro)),
        }
