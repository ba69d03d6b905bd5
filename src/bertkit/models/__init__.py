"""The network and its weights on disk: `families` (how RoBERTa, XLM-R, CamemBERT, DistilBERT and
ELECTRA depart from BERT), `config` (BertConfig, Hugging Face's field names, presets), `encoder`
(BertModel: embeddings, layers, pooler; the SDPA/eager seam), `heads` (masked-LM, next-sentence,
sequence/token classification, QA in each family's layout; logits only) and `checkpoint` (Hugging
Face directories both ways, `RENAMES`, one table a family). May import `tokenization` (a new model
sized to a tokenizer) and the ground floor; not `data` or `evaluation` (its neighbours) or anything
above."""
