"""What one model directory serves, as functions of a list of items that run on the engine thread
(`fns`): its task's route (/v1/classify, /v1/ner, /v1/qa), embeddings of any directory, fill-mask
with masked-LM weights, and the scores of texts and pairs of a classifier (TEI's /predict and
/rerank). And the request side of it: tokenization (token counts for batching and usage,
truncation as TEI's fields ask it, /tokenize) and what the model is to TEI's clients (`kind`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bertkit.engine.embeddings import EmbeddingPipeline
from bertkit.engine.runner import InferenceOptions, encoders
from bertkit.errors import BertkitError, HTTPError
from bertkit.hub import resolve
from bertkit.inference.pipelines import FillMaskPipeline, Pipeline
from bertkit.models.config import BertConfig
from bertkit.runtime import Runtime, local_runtime
from bertkit.tasks import registry

EMBEDDING, CLASSIFIER, RERANKER = "embedding", "classifier", "reranker"  # TEI's model types
POSITIVE = ("1", "positive", "entailment")  # /rerank's label of a two-class model, unless told
WARM_UP = "warm-up"


class ServedModel:
    """The pipelines one model directory can serve, each a function of a list of items."""

    def __init__(
        self,
        model_dir: str | Path,
        options: InferenceOptions,
        runtime: Runtime | None = None,
        name: str | None = None,
        rerank_label: str | None = None,
    ):
        self.dir = resolve(model_dir)
        self.name = name or str(model_dir).rstrip("/")
        self.config = BertConfig.from_pretrained(self.dir)
        self.runtime = rt = runtime or local_runtime()
        self.task: Any = None  # a fine-tuned directory's task, served at /v1/<task name>
        self.scorer: Any = None  # that task as /predict and /rerank run it: cut, not in windows
        self.fns: dict[str, Any] = {}
        if registry.is_task_dir(self.dir):
            self.pipe = Pipeline(self.dir, rt, options)
            self.scorer = self.pipe.task
            self.pipe.task = self.task = self.pipe.task.serving()
            self.fns[self.task.name] = self._task_fn
        # One copy of the weights (an ONNX-backed pipeline has no PyTorch encoder to share).
        shared = next(iter(encoders(self.pipe.model)), None) if self.fns else None
        self.embedder = EmbeddingPipeline(self.dir, rt, options=options, encoder=shared)
        self.tokenizer = self.embedder.tokenizer
        self.fns["embed"] = self._embed_fn
        self.labels: list[str] | None = self.scorer.text_scores() if self.scorer else None
        if self.labels:
            self.fns["scores"] = self._scores_fn
        self.rerank_index = self._rerank_index(rerank_label)
        if _has_mlm_weights(self.dir):
            self.filler = FillMaskPipeline(self.dir, rt, options=options)
            self.fns["fill-mask"] = self._fill_fn

    # ---- what the model is ----------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """TEI's model type: a reranker (one score of a pair), a classifier, or an embedding model
        (a directory without a text-scoring task; NER and QA directories embed with their encoder)."""
        if not self.labels:
            return EMBEDDING
        return RERANKER if len(self.labels) == 1 else CLASSIFIER

    @property
    def score_length(self) -> int:
        """Tokens a text (or pair) /predict and /rerank read."""
        return int(self.scorer.max_length) if self.scorer else self.embedder.max_length

    def _rerank_index(self, label: str | None) -> int | None:
        """Which output /rerank scores by: the one output of a one-score model; the `label` (or
        1, positive, entailment, else the last) of a two-class one; None where it cannot rerank."""
        names = self.labels or []
        if label is not None and len(names) != 2:
            raise BertkitError(f"--rerank-label needs a two-class pair model; {self.why_not_rerank()}")
        if len(names) == 1:
            return 0
        if len(names) != 2:
            return None
        if label is not None and label not in names:
            raise BertkitError(f"--rerank-label {label!r} is not a label of the model ({', '.join(names)})")
        chosen = label or next((n for n in POSITIVE if n in names), names[-1])
        return names.index(chosen)

    def what(self) -> str:
        """What the model is, for an error: 'a ner model', 'an encoder without a classifier', ..."""
        if self.labels:
            return (
                f"a classifier of {len(self.labels)} labels" if len(self.labels) > 1 else "a one-score model"
            )
        return f"a {self.task.name} model" if self.task else "an encoder without a classifier"

    def why_not_rerank(self) -> str:
        return (
            f"{self.name} is {self.what()}: /rerank needs a sentence-pair model of one score or two classes"
        )

    # ---- engine functions (the engine thread) ---------------------------------------------------

    def _task_fn(self, items: list) -> list:
        return [self.task.present(p) for p in self.pipe.run(self.task.examples_of(items))]

    def _embed_fn(self, items: list) -> list:
        """(features, pooling, normalize) items -> float32 vectors, one engine pass per setting."""
        out: list = [None] * len(items)
        for key in {(pooling, normalize) for _, pooling, normalize in items}:
            idx = [i for i, it in enumerate(items) if it[1:] == key]
            vectors = self.embedder.embed_features([items[i][0] for i in idx], *key)
            for i, v in zip(idx, vectors, strict=True):
                out[i] = v
        return out

    def _scores_fn(self, feats: list[dict]) -> list:
        """Features of texts or pairs -> each one's logits, (C,) float32 tensors."""
        feats = [{**f, "example": i} for i, f in enumerate(feats)]
        pad, most = self.tokenizer.pad_token_id, self.pipe.options.max_tokens
        return list(self.scorer.logits(self.pipe.model, feats, len(feats), pad, most))

    def _fill_fn(self, items: list) -> list:
        out = []
        for text, k in items:
            r = self.filler(text, top_k=k)
            out.append([r] if r and isinstance(r[0], dict) else r)
        return out

    def warm(self) -> None:
        """One pass through every function (the engine's first batch is its slowest)."""
        if self.task is not None:
            self._task_fn(self.task.call_items(WARM_UP, None, WARM_UP, WARM_UP)[0])
        feats, _ = self.encode([WARM_UP], limit=self.embedder.max_length)
        self._embed_fn([(feats[0], None, None)])
        if "scores" in self.fns:
            self._scores_fn(feats)
        if "fill-mask" in self.fns:
            self._fill_fn([(f"{self.filler.tokenizer.mask_token} {WARM_UP}", 1)])

    def probabilities(self, logits: list) -> torch.Tensor:
        """Logits from `_scores_fn` -> what the task reads from them (probabilities, or a score)."""
        return self.scorer.probabilities(torch.stack(logits).float())

    # ---- the request side: tokenization -------------------------------------------------------

    def encode(
        self,
        texts: list[str],
        pairs: list[str | None] | None = None,
        *,
        limit: int,
        truncate: bool = True,
        side: str = "right",
    ) -> tuple[list[dict], list[int]]:
        """Token ids of each text (or pair) for the engine, and how many each has. One over
        `limit` tokens is cut at `side` when `truncate`, else refused (413, as TEI refuses it)."""
        pairs = pairs or [None] * len(texts)
        feats: list[dict] = [{}] * len(texts)
        for has_pair in (False, True):
            idx = [i for i, p in enumerate(pairs) if (p is not None) == has_pair]
            if not idx:
                continue
            a = [texts[i] for i in idx]
            b = [str(pairs[i]) for i in idx] if has_pair else None
            enc = self.tokenizer(a, b, truncation=False)
            too_long = [j for j, ids in enumerate(enc["input_ids"]) if len(ids) > limit]
            if too_long and not truncate:
                n = len(enc["input_ids"][too_long[0]])
                raise HTTPError(
                    413, f"Input validation error: `inputs` must have at most {limit} tokens. Given: {n}"
                )
            if too_long:
                enc = self.tokenizer(a, b, truncation="longest_first", max_length=limit, truncation_side=side)
            for j, i in enumerate(idx):
                feats[i] = {"input_ids": enc["input_ids"][j], "token_type_ids": enc["token_type_ids"][j]}
        return feats, [len(f["input_ids"]) for f in feats]

    def encode_ids(self, rows: list[list[int]], limit: int) -> tuple[list[dict], list[int]]:
        """Token ids given by the client (OpenAI's token arrays): the tokenizer's special tokens
        around each row, cut at `limit` as texts are."""
        around = self.tokenizer("")["input_ids"]  # [CLS] [SEP], <s> </s>, ...
        lead, trail = around[:1], around[1:]
        room = limit - len(around)
        feats = []
        for n, row in enumerate(rows):
            bad = next((t for t in row if not 0 <= t < self.config.vocab_size), None)
            if bad is not None:
                raise HTTPError(
                    400,
                    f"input[{n}]: token id {bad} is outside the vocabulary (0..{self.config.vocab_size - 1})",
                    param="input",
                )
            ids = lead + row[:room] + trail
            feats.append({"input_ids": ids, "token_type_ids": [0] * len(ids)})
        return feats, [len(f["input_ids"]) for f in feats]

    def count(self, texts: list[str]) -> int:
        """Tokens in `texts` (the native routes' batching budget)."""
        return sum(len(ids) for ids in self.tokenizer(texts)["input_ids"]) if texts else 0

    def tokens(self, texts: list[str], add_special_tokens: bool = True) -> list[list[dict]]:
        """TEI's /tokenize: each token's id, its text (the input's characters from `start` to
        `stop`; a special token's own text and no offsets) and whether it is special."""
        enc = self.tokenizer(
            texts,
            add_special_tokens=add_special_tokens,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        out = []
        for text, ids, offsets, special in zip(
            texts, enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"], strict=True
        ):
            row = []
            for i, (s, e), sp in zip(ids, offsets, special, strict=True):
                piece = self.tokenizer.convert_ids_to_tokens(i) if sp else text[s:e]
                row.append(
                    {
                        "id": i,
                        "text": piece,
                        "special": bool(sp),
                        "start": None if sp else s,
                        "stop": None if sp else e,
                    }
                )
            out.append(row)
        return out

    def describe(self) -> dict:
        c = self.config
        return {
            "model": self.name,
            "task": self.task.name if self.task else None,
            "kind": self.kind,
            "device": str(self.runtime.device),
            "endpoints": sorted(n for n in self.fns if n != "scores"),
            "labels": [c.id2label[i] for i in sorted(c.id2label)] if c.id2label else None,
            "max_length": c.max_length,
            "hidden_size": c.hidden_size,
            "layers": c.num_hidden_layers,
        }


def _has_mlm_weights(model_dir: Path) -> bool:
    from safetensors import safe_open

    path = model_dir / "model.safetensors"
    if not path.is_file():
        return False
    with safe_open(str(path), "pt") as f:
        return any(k.startswith(("cls.predictions", "mlm.")) for k in f.keys())  # noqa: SIM118
