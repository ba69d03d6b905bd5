"""Named-entity recognition: word-level tags from sub-token logits.

Each word is labelled at its first sub-token; the other sub-tokens are ignored by the loss.
Sentences longer than `max_length` become overlapping windows; a word's prediction comes from
the window in which it has the most context on both sides. Heads: `softmax` (a linear layer,
exactly `transformers`' BertForTokenClassification), `crf` (the same emissions decoded by a
linear-chain CRF over words), `bilstm-crf` (a BiLSTM between the encoder and the emissions).

The softmax head decodes each sentence by default as the most probable valid IOB2 sequence
(`decode="constrained"`: Viterbi over the words' log-probabilities, with `O -> I-X` and
`B-X -> I-Y` forbidden), after the windows are merged; `decode="argmax"` takes each word's most
probable tag on its own, as `transformers`' token-classification examples do.

`class_weighting` ("none", "auto" or a file; `--class-weights`) weights each tag's cross-entropy
at the labelled first sub-tokens (the ignored ones carry no loss, weighted or not); auto counts
the tags over those same positions (`tasks.weights`). The softmax head alone takes weights: a CRF
is trained on the likelihood of whole tag paths, log p(y | x) = score(y) - log Z, which has no
per-tag term to weight. Scaling the gold tags' emissions instead would change the scores the
model is trained on but not those Viterbi decodes with, and a per-tag weighted "likelihood" is no
longer a distribution over paths; so a CRF head with class weights is refused, not approximated.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from bertkit.data import schemes
from bertkit.data.batching import IGNORE
from bertkit.data.examples import ReaderOptions
from bertkit.engine.runner import forward_batches
from bertkit.errors import BertkitError
from bertkit.evaluation.metrics import entity_metrics, get_entities
from bertkit.fileio import save_safetensors
from bertkit.models.config import BertConfig
from bertkit.models.heads import BertForTokenClassification
from bertkit.options import option
from bertkit.tasks import weights
from bertkit.tasks.base import Task
from bertkit.tasks.crf import CRF, BiLSTM, iob2_decoder
from bertkit.tokenization.tokenizer import Tokenizer

HEADS = ("softmax", "crf", "bilstm-crf")
HEAD = "softmax"  # the default tag decoder
DECODES = ("constrained", "argmax")  # how the softmax head turns word probabilities into tags
EXTRA_WEIGHTS = "ner_head.safetensors"  # the CRF/BiLSTM parameters transformers has no place for

# Words as CoNLL-style data splits them: every CJK character alone; abbreviations ("U.S.");
# letters and digits joined by inner hyphens, apostrophes, periods or commas ("e-mail", "don't",
# "1,000.5"); and each other punctuation character alone (so "Paris." is "Paris" and ".").
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_ALNUM = f"[^\\W_{_CJK}]"
_WORD = re.compile(f"[{_CJK}]|(?:[^\\W\\d_{_CJK}]\\.){{2,}}|{_ALNUM}+(?:[-'’.,]{_ALNUM}+)*|[^\\w\\s]|_")


def words_of(text: str):
    """Split raw text into words with their character offsets, for NER on plain text."""
    from bertkit.data.examples import TokenExample

    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    return TokenExample([text[s:e] for s, e in spans], None, text, spans, 0)


class NerTagger(nn.Module):
    """BertForTokenClassification, optionally with a BiLSTM under the emissions and a CRF on top."""

    def __init__(self, config: BertConfig, head: str = "softmax"):
        super().__init__()
        if head not in HEADS:
            raise BertkitError(f"unknown NER head {head!r}; expected one of {', '.join(HEADS)}")
        self.head = head
        self.config = config
        self.model = BertForTokenClassification(config)
        self.lstm = (
            BiLSTM(config.hidden_size, dropout=config.hidden_dropout_prob) if head == "bilstm-crf" else None
        )
        self.crf: CRF | None = None
        if head != "softmax":
            assert config.id2label is not None  # a NER config names its tags (NerTask.configure)
            self.crf = CRF.from_labels([config.id2label[i] for i in sorted(config.id2label)])

    def emissions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # (B, T, C)
        if self.lstm is None:
            return self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        h = self.model.bert(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        ).last_hidden_state
        h = self.lstm(self.model.dropout(h), batch["attention_mask"].bool())
        return self.model.classifier(self.model.dropout(h))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.emissions(batch)

    @classmethod
    def from_pretrained(cls, directory, config: BertConfig | None = None, head: str = "softmax", **kw):
        directory = Path(directory)
        config = config or BertConfig.from_pretrained(directory)
        tagger = cls(config, head)
        tagger.model = BertForTokenClassification.from_pretrained(directory, config=config, **kw)
        extra = directory / EXTRA_WEIGHTS
        if head != "softmax" and extra.is_file():
            tagger.load_state_dict({**tagger.state_dict(), **load_file(extra)})
        return tagger.eval()

    def save_pretrained(self, directory) -> None:
        self.model.save_pretrained(directory)
        extra = {k: v.contiguous() for k, v in self.state_dict().items() if not k.startswith("model.")}
        if extra:
            save_safetensors(extra, Path(directory) / EXTRA_WEIGHTS)


def _decode_sentences(decoder: CRF, sentences: list[list[torch.Tensor]], chunk: int = 256) -> list[list[int]]:
    """Viterbi over each sentence's word log-probabilities (W, C), in length-sorted chunks."""
    out: list[list[int]] = [[] for _ in sentences]
    order = sorted((i for i, s in enumerate(sentences) if s), key=lambda i: len(sentences[i]))
    for s in range(0, len(order), chunk):
        part = order[s : s + chunk]
        W = len(sentences[part[-1]])
        lp = torch.zeros(len(part), W, decoder.num_tags)  # (B, W, C); padding is masked out
        mask = torch.zeros(len(part), W, dtype=torch.bool)
        for b, i in enumerate(part):
            lp[b, : len(sentences[i])] = torch.stack(sentences[i])
            mask[b, : len(sentences[i])] = True
        for i, path in zip(part, decoder.decode(lp, mask), strict=True):
            out[i] = path
    return out


def _word_positions(labels_or_words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of each row's word-start tokens, left-aligned: (B, W) positions and (B, W) mask."""
    starts = labels_or_words >= 0  # (B, T)
    W = max(1, int(starts.sum(1).max()))
    order = torch.argsort((~starts).to(torch.int8), dim=1, stable=True)[:, :W]  # word starts first
    mask = torch.gather(starts, 1, order)
    return order, mask


@dataclass
class NerOptions:
    """The ner task's own flags; None: the default."""

    head: str | None = option(None, choices=HEADS, help=f"ner: tag decoder (default {HEAD})")
    decode: str | None = option(
        None,
        choices=DECODES,
        help="ner, softmax head: each sentence's most probable valid IOB2 tags (Viterbi, constrained, the "
        "default) or each word's most probable tag on its own (transformers' argmax); saved with the model",
    )


@dataclass
class NerTask(Task):
    labels: list[str]
    head: str = HEAD
    max_length: int = 128
    stride: int = 32
    decode: str = "constrained"  # softmax head: "constrained" (valid IOB2, Viterbi) or "argmax"
    class_weighting: str = weights.NONE  # softmax head: "none", "auto" or a weights file
    class_weights: list[float] | None = None  # per tag, in label order; set by `prepare`
    tag_scheme: str | None = None  # the training file's tag scheme (data.schemes); None: unknown

    name = "ner"
    flag_group = NerOptions
    main_metric = "f1"
    formats = ("conll", "spans")
    pipeline_names = ("ner", "token-classification")
    response_key = "entities"
    transformers_head = "ForTokenClassification"
    # Labelled words in an average training batch; set by `prepare`. Length-grouped batches hold
    # very different numbers of words, so the softmax loss is a sum divided by this constant:
    # every word weighs the same, as with randomly mixed batches, instead of each batch.
    words_per_batch: float | None = field(default=None, init=False, repr=False)
    # The scheme of the tags `output_row` and `error` write (`with_output_scheme`); not saved.
    output_scheme: str = field(default="iob2", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.decode not in DECODES:
            raise BertkitError(f"unknown NER decoding {self.decode!r}; expected one of {', '.join(DECODES)}")
        weighted = self.class_weighting != weights.NONE or self.class_weights is not None
        if weighted and self.head != "softmax":
            raise BertkitError(f"--class-weights works with the softmax head, not --head {self.head}")
        weights.check_length(self.class_weights, self.labels)

    @classmethod
    def read(cls, path: str | Path, fmt: str | None, opts: ReaderOptions) -> list:
        """CoNLL columns, or character-offset span JSON lines (the default for .json/.jsonl)."""
        from bertkit.data.conll import read_conll
        from bertkit.data.spans import read_span_jsonl

        if fmt is None:
            fmt = "spans" if Path(path).suffix.lower() in (".json", ".jsonl") else "conll"
        if fmt == "spans":
            return read_span_jsonl(path)
        columns = (
            ("token_column", opts.token_column),
            ("tag_column", opts.tag_column),
            ("scheme", opts.scheme),
        )
        given: dict[str, Any] = {k: v for k, v in columns if v is not None}  # else the reader's defaults
        return read_conll(path, strip_digit_suffix=opts.strip_digit_suffix, **given)

    @classmethod
    def from_settings(cls, settings: dict, train: list, source: str | Path) -> NerTask:
        from bertkit.data.labels import label_vocab

        read_as = next((e.scheme for e in train if e.scheme is not None), None)  # None: span JSONL
        return cls(label_vocab(train), **cls.settings(settings), tag_scheme=read_as)

    def read_as(self) -> str | None:
        if self.tag_scheme is None:
            return None
        return f"tags read as {self.tag_scheme.upper()} (trained as IOB2; the scheme is saved with the model)"

    def prepare(self, train_feats: list[dict], batch_size: int) -> None:
        words = sum(sum(1 for x in f["labels"] if x != IGNORE) for f in train_feats)
        self.words_per_batch = max(1.0, words * batch_size / max(1, len(train_feats)))
        if self.class_weighting != weights.NONE:  # tags counted at the labelled first sub-tokens
            tags = (x for f in train_feats for x in f["labels"] if x != IGNORE)
            self.class_weights = weights.resolve(self.class_weighting, self.labels, tags)

    def loss_count(self, feats: Sequence[dict]) -> float:
        if self.head != "softmax":  # the CRF's loss is a mean over windows with a word start
            return float(sum(1 for f in feats if any(x != IGNORE for x in f["labels"])))
        if self.words_per_batch is not None:  # every word weighs the same (see `words_per_batch`)
            return self.words_per_batch
        return float(sum(sum(1 for x in f["labels"] if x != IGNORE) for f in feats))

    def load_model(self, model_dir: str | Path, **kw: Any) -> NerTagger:
        return NerTagger.from_pretrained(model_dir, head=self.head, **kw)

    def examples_of(self, items: list) -> list:
        """Raw texts, split into words (`words_of`)."""
        return [words_of(t) for t in items]

    def present(self, pred: dict) -> Any:
        return pred["entities"]

    def with_output_scheme(self, scheme: str | None) -> NerTask:
        """The task writing tags in `scheme`; "auto" is the training file's (`tag_scheme`)."""
        task = copy.copy(self)
        task.output_scheme = schemes.output_scheme(scheme, self.tag_scheme)
        return task

    def written(self, tags: list[str]) -> list[str]:
        """IOB2 tags as `output_row` and `error` write them: in `output_scheme`."""
        return schemes.from_iob2(tags, self.output_scheme)

    def output_row(self, example: Any, pred: dict) -> dict:
        return {"text": example.text, **pred, "tags": self.written(pred["tags"])}

    @property
    def onnx_needs_torch(self) -> bool:
        return self.head != "softmax"

    def onnx_model(self, runner: nn.Module, torch_model: nn.Module | None) -> nn.Module:
        from bertkit.engine.onnx_runner import OnnxTagger

        crf = getattr(torch_model, "crf", None)
        return OnnxTagger(runner, crf.eval() if crf is not None else None)

    model_class = NerTagger

    def configure(self, config: BertConfig) -> None:
        config.set_labels(self.labels)

    @classmethod
    def from_transformers(cls, config: BertConfig) -> tuple[dict, str]:
        """The tag scheme read from the tag names, as the readers detect it; IOB1/IOB2 tags
        decode to valid IOB2 (constrained Viterbi), other schemes by each word's best tag."""
        labels = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
        scheme = schemes.detect([labels]) if labels else "iob2"
        scheme = "iob2" if scheme == "iob1" else scheme  # one tag set: B- and I- read as IOB2
        how = "constrained IOB2 decoding" if scheme == "iob2" else "each word's most probable tag"
        note = f"{len(labels)} tags read as {scheme.upper()}, {how}"
        return {"task": cls.name, "tag_scheme": scheme}, note

    @classmethod
    def from_info(cls, info: dict, config: BertConfig) -> NerTask:
        assert config.id2label is not None  # saved by configure
        return cls([config.id2label[i] for i in sorted(config.id2label)], **cls.settings(info))

    def features(self, tokenizer: Tokenizer, examples: Sequence, with_labels: bool = True) -> list[dict]:
        """Windows of sub-tokens; `words[t]` is the word whose first sub-token sits at t, else -1.

        A word's first sub-token is the one starting earliest in the word (offsets are relative to
        each word for pre-split input); the same token may open several overlapping windows.
        """
        label2id = {name: i for i, name in enumerate(self.labels)}
        enc = tokenizer(
            [list(e.tokens) for e in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        owners = enc["overflow_to_sample_mapping"]
        first_start: dict[tuple[int, int], int] = {}  # (example, word) -> earliest char start
        for row, owner in enumerate(owners):
            for w, (s, _) in zip(enc.word_ids(row), enc["offset_mapping"][row], strict=True):
                if w is not None:
                    key = (owner, w)
                    first_start[key] = min(s, first_start.get(key, s))
        feats = []
        for row, owner in enumerate(owners):
            words: list[int] = []
            seen: set[int] = set()
            for w, (s, _) in zip(enc.word_ids(row), enc["offset_mapping"][row], strict=True):
                if w is not None and w not in seen and s == first_start[(owner, w)]:  # a first sub-token
                    words.append(w)
                    seen.add(w)
                else:
                    words.append(-1)
            f = {
                "input_ids": enc["input_ids"][row],
                "token_type_ids": enc["token_type_ids"][row],
                "words": words,
                "example": owner,
            }
            if with_labels:
                tags = examples[owner].tags
                f["labels"] = [label2id[tags[w]] if w >= 0 else IGNORE for w in words]
            feats.append(f)
        return feats

    @property
    def soft_targets(self) -> str | None:
        return "softmax"  # a CRF head's emissions too: each token's scores over the tags

    def outputs(self, tagger: NerTagger, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return tagger(batch)  # forward: through DDP's wrapper, when there is one

    def soft_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return batch["labels"] != IGNORE  # each word's first sub-token

    def blank_labels(self, feat: dict) -> Any:
        """The O tag (else tag 0) at each word's first sub-token, IGNORE elsewhere."""
        o_id = self.labels.index("O") if "O" in self.labels else 0
        return [o_id if w >= 0 else IGNORE for w in feat["words"]]

    def build_model(self, config: BertConfig) -> NerTagger:
        return NerTagger(config, self.head)

    def loss(self, tagger: NerTagger, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_from(tagger, self.outputs(tagger, batch), batch)

    def loss_from(
        self, tagger: NerTagger, emissions: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        emissions = emissions.float()
        crf = getattr(tagger, "module", tagger).crf
        if crf is None:
            flat = (emissions.flatten(0, 1), batch["labels"].flatten())
            words = float((batch["labels"] != IGNORE).sum())
            norm = batch.get("loss_norm", self.words_per_batch or max(1.0, words))  # see loss_count
            w = None if self.class_weights is None else emissions.new_tensor(self.class_weights)
            # a weighted sum over the labelled positions (IGNORE adds nothing) over the unweighted
            # word count, not a weighted mean: see ClassifyTask.loss
            return F.cross_entropy(*flat, weight=w, ignore_index=IGNORE, reduction="sum") / norm
        pos, mask = _word_positions(batch["labels"])
        word_em = torch.gather(emissions, 1, pos[..., None].expand(-1, -1, emissions.shape[-1]))
        tags = torch.gather(batch["labels"], 1, pos).clamp(min=0)
        # A window may open inside an entity; its first I-X is that window's B-X (the CRF forbids
        # starting on I-X, which would add a huge constant to the loss).
        tags[:, 0] = self._begin_of[tags[:, 0]]
        keep = mask.any(1)  # windows with no word start carry nothing for the CRF
        nll = -crf.log_likelihood(word_em[keep], tags[keep], mask[keep]).sum()
        return nll / batch.get("loss_norm", max(1.0, float(keep.sum())))

    @property
    def _begin_of(self) -> torch.Tensor:
        """tag id -> the id of its B- form when it is an I- tag that has one, else itself."""
        ids = {name: i for i, name in enumerate(self.labels)}
        return torch.tensor(
            [ids.get("B-" + n[2:], i) if n.startswith("I-") else i for i, n in enumerate(self.labels)]
        )

    @torch.inference_mode()
    def predict(
        self, tagger: NerTagger, feats: list[dict], examples: Sequence, pad_id: int, max_tokens: int = 8192
    ) -> list[dict]:
        # A softmax head keeps each word's log-probabilities (C,) from the window in which the word
        # has the most context, then decodes whole sentences; a CRF decodes each window and keeps
        # each word's tag from that same window. best[(example, word)] = (context, log-probs, tag)
        best: dict[tuple[int, int], tuple[int, torch.Tensor, int]] = {}
        run = forward_batches(tagger, tagger.emissions, feats, pad_id, max_tokens, ["words"])
        for idx, batch, emissions in run:
            emissions = emissions.float()
            pos, mask = _word_positions(batch["words"])
            word_em = torch.gather(emissions, 1, pos[..., None].expand(-1, -1, emissions.shape[-1]))
            log_probs = word_em.log_softmax(-1).cpu()  # (B, W, C)
            if tagger.crf is None:
                paths = log_probs.argmax(-1).tolist()
            else:
                paths = [[] for _ in idx]
                keep = mask.any(1).nonzero().flatten().tolist()  # rows with at least one word start
                if keep:
                    for b, path in zip(keep, tagger.crf.decode(word_em[keep], mask[keep]), strict=True):
                        paths[b] = path
            for b, i in enumerate(idx):
                f = feats[i]
                n = len(f["input_ids"])
                for j in range(int(mask[b].sum())):
                    t = int(pos[b, j])
                    key = (f["example"], f["words"][t])
                    context = min(t, n - 1 - t)
                    if key not in best or context > best[key][0]:
                        best[key] = (context, log_probs[b, j], paths[b][j])
        o_id = self.labels.index("O") if "O" in self.labels else 0
        unseen = torch.full((len(self.labels),), -1e4)  # a word no window reached (none should): O
        unseen[o_id] = 0.0
        words = [[best.get((e_i, w), (0, unseen, o_id))[1:] for w in range(len(e.tokens))]
                 for e_i, e in enumerate(examples)]  # fmt: skip
        decoder = iob2_decoder(self.labels) if tagger.crf is None and self.decode == "constrained" else None
        if decoder is None:
            tag_ids = [[tag for _, tag in ws] for ws in words]
        else:
            tag_ids = _decode_sentences(decoder, [[lp for lp, _ in ws] for ws in words])
        out = []
        for e, ws, ids in zip(examples, words, tag_ids, strict=True):
            tags = [self.labels[k] for k in ids]
            scores = [float(lp[k].exp()) for (lp, _), k in zip(ws, ids, strict=True)]
            out.append({"tags": tags, "entities": self.entities(e, tags, scores)})
        return out

    @staticmethod
    def entities(example, tags: list[str], scores: list[float]) -> list[dict]:
        """Entity spans with character offsets into the example's text; score = mean word probability."""
        spans = []
        for label, start, end in get_entities(tags):
            s, e = example.offsets[start][0], example.offsets[end][1]
            spans.append(
                {
                    "text": example.text[s:e],
                    "label": label,
                    "start": s,
                    "end": e,
                    "score": sum(scores[start : end + 1]) / (end - start + 1),
                }
            )
        return spans

    def metrics(self, examples: Sequence, preds: list[dict]) -> dict:
        return entity_metrics([list(e.tags) for e in examples], [p["tags"] for p in preds])

    def error(self, example, pred: dict, index: int) -> dict | None:
        if pred["tags"] == list(example.tags):
            return None
        return {
            "index": index,
            "line": example.line,
            "text": example.text,
            "tags": self.written(list(example.tags)),
            "predicted": self.written(pred["tags"]),
            "entities": pred["entities"],
        }
