"""Readers: files in the formats users bring (TSV/CSV/JSONL, CoNLL columns, span JSONL, SQuAD)."""
