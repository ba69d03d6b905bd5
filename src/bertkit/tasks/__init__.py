"""Tasks: what turns logits into losses, predictions and metrics (classification, NER, QA)."""
