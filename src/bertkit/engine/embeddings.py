"""Sentence embeddings ("feature-extraction"): the encoder's last hidden states pooled into one
vector per text, mean over the tokens or the [CLS] vector, optionally L2-normalised: the
sentence-transformers recipe, on bertkit's inference engine.

    emb = bertkit.pipeline("feature-extraction", model="path/to/all-MiniLM-L6-v2")
    vectors = emb(["a sentence", "another one"])  # numpy (2, 384) float32

A sentence-transformers directory (modules.json, 1_Pooling/config.json, sentence_bert_config.json)
sets the defaults, so all-MiniLM-L6-v2 gives mean pooling, normalised vectors and a 256-token
limit, as `SentenceTransformer(...).encode` does; arguments override them. Texts longer than the
limit are truncated (sentence-transformers does the same).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bertkit.engine.backend import choose
from bertkit.engine.runner import InferenceOptions, forward_batches, prepare
from bertkit.errors import BertkitError
from bertkit.hub import resolve
from bertkit.models.config import check_tokenizer
from bertkit.models.encoder import BertModel
from bertkit.runtime import Runtime, local_runtime
from bertkit.tokenization.text import read_texts
from bertkit.tokenization.tokenizer import Tokenizer

POOLINGS = ("mean", "cls")


def sentence_transformers_settings(directory: Path) -> dict:
    """pooling / normalize / max_length as a sentence-transformers directory declares them
    (empty for a plain Hugging Face directory)."""
    out: dict = {}
    modules = directory / "modules.json"
    if not modules.is_file():
        return out
    try:
        mods = json.loads(modules.read_text(encoding="utf-8"))
        out["normalize"] = any(str(m.get("type", "")).endswith(".Normalize") for m in mods)
        for m in mods:
            if str(m.get("type", "")).endswith(".Pooling"):
                cfg = json.loads((directory / m["path"] / "config.json").read_text(encoding="utf-8"))
                mode = cfg.get("pooling_mode")  # sentence-transformers 6 names it in one field
                if cfg.get("pooling_mode_cls_token") or mode == "cls":
                    out["pooling"] = "cls"
                elif cfg.get("pooling_mode_mean_tokens") or mode == "mean":
                    out["pooling"] = "mean"
                else:
                    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
                    raise BertkitError(
                        f"pooling {modes} is not supported (mean or cls)", directory / m["path"]
                    )
        sbert = directory / "sentence_bert_config.json"
        if sbert.is_file():
            length = json.loads(sbert.read_text(encoding="utf-8")).get("max_seq_length")
            if length:
                out["max_length"] = int(length)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BertkitError(f"unreadable sentence-transformers settings: {e}", directory) from None
    return out


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, H) hidden states, (B, T) mask -> (B, H). Mean counts every real token, [CLS] and
    [SEP] included, as sentence-transformers does."""
    if pooling == "cls":
        return hidden[:, 0]
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class EmbeddingPipeline:
    def __init__(
        self,
        model_dir: str | Path,
        runtime: Runtime | None = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        options: InferenceOptions | None = None,
        encoder: BertModel | None = None,
    ):
        """`encoder`: an already prepared encoder of `model_dir` to share (the server's task
        model), instead of loading the weights a second time."""
        d = resolve(model_dir)  # a folder, or a Hub name
        st = sentence_transformers_settings(d) if d.is_dir() else {}
        self.pooling = pooling or st.get("pooling", "mean")
        if self.pooling not in POOLINGS:
            raise BertkitError(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        self.normalize = st.get("normalize", False) if normalize is None else normalize
        self.tokenizer = Tokenizer.from_pretrained(d)
        given = options or InferenceOptions.from_env()
        shared = encoder is not None
        if encoder is None:
            encoder = BertModel.from_pretrained(d, add_pooling_layer=False)
        config = encoder.config
        check_tokenizer(config, self.tokenizer, d)
        self.model: torch.nn.Module
        rt = runtime or local_runtime()
        # a shared encoder is already the task model's (the torch engine's)
        self.options = o = given.on("torch" if shared else choose(given, rt))
        if shared:
            self.model = encoder
        elif o.backend == "openvino":
            from bertkit.engine.openvino_runner import openvino_runner

            self.model = openvino_runner(encoder, ("last_hidden_state",), o, rt, self.tokenizer)
        else:
            self.model = prepare(encoder, o, rt)
        # sentence-transformers 6 keeps the length in the tokenizer's model_max_length
        st_length = st.get("max_length") or (self.tokenizer.model_max_length if st else None)
        self.max_length = min(max_length or st_length or 10**9, config.max_length)
        self.dim = config.hidden_size

    def __call__(
        self, inputs: str | list[str], pooling: str | None = None, normalize: bool | None = None
    ) -> np.ndarray:
        """(N, H) float32 embeddings for a list of texts, (H,) for one text; `pooling` and
        `normalize` override the pipeline's settings for this call."""
        single = isinstance(inputs, str)
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        out = self.embed_features(self.features(texts), pooling, normalize)
        return out[0] if single else out

    def features(self, texts: list[str]) -> list[dict]:
        """Token ids of each text, cut at the pipeline's length limit."""
        if not texts:
            return []
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        return [
            {"input_ids": i, "token_type_ids": t}
            for i, t in zip(enc["input_ids"], enc["token_type_ids"], strict=True)
        ]

    @torch.inference_mode()
    def embed_features(
        self, feats: list[dict], pooling: str | None = None, normalize: bool | None = None
    ) -> np.ndarray:
        """(N, H) float32 embeddings of texts already tokenized (`input_ids`, `token_type_ids`)."""
        pooling = pooling or self.pooling
        if pooling not in POOLINGS:
            raise BertkitError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        normalize = self.normalize if normalize is None else normalize
        out = np.zeros((len(feats), self.dim), dtype=np.float32)
        if not feats:
            return out
        pad = self.tokenizer.pad_token_id

        def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            h = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            return pool(h.last_hidden_state.float(), batch["attention_mask"], pooling)

        for idx, _, v in forward_batches(self.model, forward, feats, pad, self.options.max_tokens):
            if normalize:
                v = torch.nn.functional.normalize(v, dim=-1)
            out[idx] = v.cpu().numpy()
        return out


def embed_file(pipe: EmbeddingPipeline, source: str, dest: str, chunk: int = 4096) -> tuple[int, int]:
    """Embed the texts of `source` into a float32 .npy file at `dest` (written to a temporary file,
    then renamed). Returns its shape."""
    from bertkit.fileio import atomic_open

    texts = read_texts(source)
    out = np.zeros((len(texts), pipe.dim), dtype=np.float32)
    for s in range(0, len(texts), chunk):
        out[s : s + chunk] = pipe(texts[s : s + chunk])
    with atomic_open(dest, "wb") as f:
        np.save(f, out)
    return out.shape
