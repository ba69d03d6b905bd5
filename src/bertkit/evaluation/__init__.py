"""Scores and what people read of them: `metrics` (accuracy/F1 per label, seqeval-style entities,
SQuAD EM/F1, multi-label and regression figures, checked against scikit-learn and seqeval) and
`report` (the report folder: tables, confusion matrix, per-label F1, learning curves). May
import the ground floor only; tasks and training import it."""
