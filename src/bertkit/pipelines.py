"""Ready-to-call pipelines on a fine-tuned directory, as `transformers.pipeline` users expect:

clf = bertkit.pipeline("text-classification", model="out/sst2")
clf(["a gripping film", "dull"])  # [{"label": "1", "score": 0.97, "scores": {...}}, ...]
ner = bertkit.pipeline("ner", model="out/conll")
ner("Angela Merkel visited Paris")  # [{"text": "Angela Merkel", "label": "PER", "start": 0, ...}]
qa = bertkit.pipeline("question-answering", model="out/squad")
qa(question="Who?", context="...")  # {"answer": ..., "start": ..., "end": ..., "score": ...}
emb = bertkit.pipeline("feature-extraction", model="path/to/all-MiniLM-L6-v2")
emb(["a sentence"])  # numpy (1, 384): see embeddings.py

All run on the inference engine (`bertkit.inference`): bf16 weights where the CPU has bf16 matrix
units, padding-free batches sorted by length; `precision="fp32"`, `int8=True`, `compile=True`,
`threads=N`, `max_tokens=N` choose otherwise (or `BERTKIT_PRECISION` / `BERTKIT_THREADS`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from bertkit.config import BertConfig
from bertkit.data.readers import QAExample, TextExample, TokenExample
from bertkit.errors import BertkitError
from bertkit.finetune import load_task_info
from bertkit.inference import InferenceOptions, prepare
from bertkit.tasks.classify import ClassifyTask
from bertkit.tasks.ner import NerTask
from bertkit.tasks.qa import QATask
from bertkit.tokenizer import Tokenizer

TASKS = {"classify": ClassifyTask, "ner": NerTask, "qa": QATask}
ALIASES = {
    "text-classification": "classify",
    "sentiment-analysis": "classify",
    "ner": "ner",
    "token-classification": "ner",
    "question-answering": "qa",
}

# Words as CoNLL-style data splits them: every CJK character alone; abbreviations ("U.S.");
# letters and digits joined by inner hyphens, apostrophes, periods or commas ("e-mail", "don't",
# "1,000.5"); and each other punctuation character alone (so "Paris." is "Paris" and ".").
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_ALNUM = f"[^\\W_{_CJK}]"
_WORD = re.compile(f"[{_CJK}]|(?:[^\\W\\d_{_CJK}]\\.){{2,}}|{_ALNUM}+(?:[-'’.,]{_ALNUM}+)*|[^\\w\\s]|_")


def words_of(text: str) -> TokenExample:
    """Split raw text into words with their character offsets, for NER on plain text."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    return TokenExample([text[s:e] for s, e in spans], None, text, spans, 0)


def load_task(model_dir: str | Path):
    """The task a fine-tuned directory was trained for, rebuilt from its config.json."""
    info = load_task_info(Path(model_dir))
    config = BertConfig.from_pretrained(model_dir)
    if info["task"] not in TASKS:
        raise BertkitError(f"config.json names an unknown task {info['task']!r}", model_dir)
    return TASKS[info["task"]].from_info(info, config)


class Pipeline:
    def __init__(
        self,
        model_dir: str | Path,
        device: str | torch.device | None = None,
        options: InferenceOptions | None = None,
    ):
        self.task = load_task(model_dir)
        self.tokenizer = Tokenizer.from_pretrained(model_dir)
        o = self.options = options or InferenceOptions.from_env()
        if o.backend == "onnx":
            from bertkit.onnx_backend import onnx_model

            # The graph holds the whole forward pass; only a CRF's transitions come from PyTorch.
            crf = getattr(self.task, "head", "softmax") != "softmax"
            model = self.task.model_class.from_pretrained(model_dir) if crf else None
            self.model = onnx_model(Path(model_dir), self.task, model, o.onnx_file, o.threads)
            return
        model = self.task.model_class.from_pretrained(model_dir)
        if device is not None:
            model.to(device)
        self.model = prepare(model, o)

    def run(self, examples: list) -> list[dict]:
        if not examples:
            return []
        feats = self.task.features(self.tokenizer, examples, with_labels=False)
        pad = self.tokenizer.pad_token_id
        return self.task.predict(self.model, feats, examples, pad, max_tokens=self.options.max_tokens)

    def __call__(self, inputs=None, text_pair=None, *, question=None, context=None):
        name = self.task.name
        if name == "qa":
            single = isinstance(question, str)
            qs, cs = ([question], [context]) if single else (question, context)
            out = self.run(
                [QAExample(str(i), q, c, [], None) for i, (q, c) in enumerate(zip(qs, cs, strict=True))]
            )
            return out[0] if single else out
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if name == "ner":
            out = [p["entities"] for p in self.run([words_of(t) for t in texts])]
        else:
            pairs = [text_pair] if single else (text_pair or [None] * len(texts))
            out = self.run([TextExample(t, p, None, 0) for t, p in zip(texts, pairs, strict=True)])
        return out[0] if single else out


class FillMaskPipeline:
    """Top-k fillers for each [MASK] of a text, from a masked-LM model (a pretrained directory):
    `[{"token": str, "token_id": int, "score": float, "sequence": str}, ...]` for a text with one
    mask, a list of such lists (one per mask, left to right) for a text with several."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str | torch.device | None = None,
        top_k: int = 5,
        options: InferenceOptions | None = None,
    ):
        from bertkit.heads import BertForMaskedLM

        self.tokenizer = Tokenizer.from_pretrained(model_dir)
        model = BertForMaskedLM.from_pretrained(model_dir)
        if device is not None:
            model.to(device)
        self.model = prepare(model, options or InferenceOptions.from_env())
        self.top_k = top_k
        self.mask_id = self.tokenizer.convert_tokens_to_ids("[MASK]")

    def __call__(self, inputs: str | list[str], top_k: int | None = None):
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        k = top_k or self.top_k
        out = []
        device = next(self.model.parameters()).device
        for text in texts:
            enc = self.tokenizer(text, truncation=True, return_tensors="pt")
            ids = enc["input_ids"].to(device)
            where = (ids[0] == self.mask_id).nonzero().flatten().tolist()
            if not where:
                raise BertkitError(f"no [MASK] token in the text: {text[:80]!r}")
            with torch.inference_mode():
                logits = self.model(
                    ids, enc["attention_mask"].to(device), enc["token_type_ids"].to(device)
                ).logits
            fills = []
            for pos in where:
                probs = logits[0, pos].float().softmax(-1)
                scores, cand = probs.topk(min(k, probs.numel()))
                row = []
                for score, tid in zip(scores.tolist(), cand.tolist(), strict=True):
                    filled = ids[0].clone()
                    filled[pos] = tid
                    token = self.tokenizer.convert_ids_to_tokens(tid)
                    sequence = self.tokenizer.decode(filled.tolist())
                    row.append({"token": token, "token_id": tid, "score": score, "sequence": sequence})
                fills.append(row)
            out.append(fills[0] if len(fills) == 1 else fills)
        return out[0] if single else out


def pipeline(
    task: str,
    model: str | Path,
    device: str | torch.device | None = None,
    *,
    precision: str | None = None,
    int8: bool | None = None,
    compile: bool | None = None,
    threads: int | None = None,
    max_tokens: int | None = None,
    backend: str | None = None,
    onnx_file: str | Path | None = None,
    **kwargs,
):
    """A pipeline for a model directory; `task` must match what the model was trained for
    ("fill-mask" takes a pretrained masked-LM directory, "feature-extraction" any BERT
    directory and takes `pooling`, `normalize`, `max_length`). The keyword arguments after
    `device` set the inference engine (see `bertkit.inference.InferenceOptions`); `backend="onnx"`
    runs a task model's file from `bertkit export` (`onnx_file`, default MODEL/model.onnx)."""
    opts = InferenceOptions.from_env(
        precision=precision,
        int8=int8,
        compile=compile,
        threads=threads,
        max_tokens=max_tokens,
        backend=backend,
        onnx_file=onnx_file,
    )
    if opts.backend == "onnx" and ALIASES.get(task) is None:
        raise BertkitError(f"backend 'onnx' runs classification, NER and QA models, not {task!r}")
    if task in ("feature-extraction", "sentence-embedding"):
        from bertkit.embeddings import EmbeddingPipeline

        return EmbeddingPipeline(model, device, options=opts, **kwargs)
    if kwargs:
        raise BertkitError(f"unexpected arguments for a {task!r} pipeline: {', '.join(kwargs)}")
    if task == "fill-mask":
        return FillMaskPipeline(model, device, options=opts)
    want = ALIASES.get(task)
    if want is None:
        known = ", ".join([*ALIASES, "fill-mask", "feature-extraction"])
        raise BertkitError(f"unknown pipeline task {task!r}; expected one of {known}")
    pipe = Pipeline(model, device, opts)
    if pipe.task.name != want:
        raise BertkitError(f"the model was fine-tuned for {pipe.task.name!r}, not {want!r}", model)
    return pipe
