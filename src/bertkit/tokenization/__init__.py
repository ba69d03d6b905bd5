"""Text to token ids: raw text files (`text`: files and globs, lines, documents, Gutenberg
boilerplate, inputs of one text a line), word segmentation for Chinese whole-word masking
(`segment`), the `Tokenizer` over the `tokenizers` library (`tokenizer`: WordPiece with BERT's
normaliser and templates, byte-level BPE and Unigram as their files have them; `pipeline`: kinds,
special tokens, word rules; `encoding`, `files`) and learning a vocabulary (`vocab`). May import
the ground floor only (`errors`, `fileio`, `runtime`, `hub`); everything that reads text or token
ids sits above it."""
