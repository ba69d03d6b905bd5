"""bertkit: BERT end to end on PyTorch."""

from bertkit.errors import BertkitError
from bertkit.models.config import BertConfig
from bertkit.models.encoder import BertModel
from bertkit.models.heads import (
    BertForMaskedLM,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from bertkit.tokenization.tokenizer import Tokenizer


def pipeline(task: str, model, device=None, **kwargs):
    """`bertkit.pipeline("text-classification" | "ner" | "question-answering" | "fill-mask" |
    "feature-extraction", model=DIR, **options)`: see `bertkit.inference.pipelines.pipeline`."""
    from bertkit.inference.pipelines import pipeline as _pipeline

    return _pipeline(task, model, device, **kwargs)


__all__ = [
    "BertConfig",
    "BertModel",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForNextSentencePrediction",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
    "BertkitError",
    "Tokenizer",
    "pipeline",
]
__version__ = "0.1.0"
