"""Text to token ids: raw text files (`text`: files and globs, lines, documents, Gutenberg
boilerplate, inputs of one text a line), word segmentation for Chinese whole-word masking
(`segment`), the `Tokenizer` over the `tokenizers` library (`tokenizer`: WordPiece, BERT's
normaliser and templates) and learning a vocabulary (`vocab`). May import the ground floor only
(`errors`, `fileio`, `runtime`); everything that reads text or token ids sits above it."""
