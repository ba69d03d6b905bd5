"""The network and its weights on disk: `config` (BertConfig, Hugging Face's field names, presets),
`encoder` (BertModel: embeddings, layers, pooler; the SDPA/eager seam), `heads` (masked-LM,
next-sentence, sequence/token classification, QA; logits only) and `checkpoint` (Hugging Face
directories both ways, `RENAMES`). May import `tokenization` (a new model sized to a tokenizer)
and the ground floor; not `data` or `evaluation` (its neighbours) or anything above."""
