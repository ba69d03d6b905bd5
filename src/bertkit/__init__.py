"""bertkit: BERT end to end on PyTorch."""

from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.heads import (
    BertForMaskedLM,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from bertkit.model import BertModel

try:  # the tokenizer module is optional at import time only while it is being built
    from bertkit.tokenizer import Tokenizer
except ImportError:  # pragma: no cover
    Tokenizer = None  # type: ignore[assignment,misc]

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
]
__version__ = "0.1.0"
