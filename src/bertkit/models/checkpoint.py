"""Checkpoints as Hugging Face directories: config.json + model.safetensors.

bertkit's parameter names are its own (short, with fused QKV); this module maps them to and
from the names `transformers` uses, so a directory written here loads in `BertModel`,
`BertForMaskedLM`, `BertForSequenceClassification`, ... unchanged, and theirs load here.

Reading never runs code: safetensors holds raw tensors, and a legacy `pytorch_model.bin`
is read only through `torch.load(..., weights_only=True)`, which refuses any pickled object
that is not a tensor or a plain container.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from bertkit.errors import BertkitError
from bertkit.fileio import save_safetensors
from bertkit.hub import resolve
from bertkit.models.config import BertConfig
from bertkit.models.families import Family

log = logging.getLogger("bertkit")

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = "pytorch_model.bin"

# (Hugging Face name, bertkit name) prefixes, one table a family (see `families`); {i} is a
# layer index. The QKV projections are handled apart (QKV below) because bertkit fuses three
# HF tensors into one.
_EMBEDDINGS = [
    ("embeddings.word_embeddings.", "embeddings.word."),
    ("embeddings.position_embeddings.", "embeddings.position."),
    ("embeddings.token_type_embeddings.", "embeddings.token_type."),
    ("embeddings.LayerNorm.", "embeddings.norm."),
]
_LAYERS = [
    ("encoder.layer.{i}.attention.output.dense.", "layers.{i}.attn.proj."),
    ("encoder.layer.{i}.attention.output.LayerNorm.", "layers.{i}.attn_norm."),
    ("encoder.layer.{i}.intermediate.dense.", "layers.{i}.ffn.up."),
    ("encoder.layer.{i}.output.dense.", "layers.{i}.ffn.down."),
    ("encoder.layer.{i}.output.LayerNorm.", "layers.{i}.ffn_norm."),
]
_TASK_HEADS = [("classifier.", "classifier."), ("qa_outputs.", "qa_outputs.")]
RENAMES: dict[str, list[tuple[str, str]]] = {
    "bert": [
        *_EMBEDDINGS,
        *_LAYERS,
        ("pooler.dense.", "pooler.dense."),
        ("cls.predictions.transform.dense.", "mlm.dense."),
        ("cls.predictions.transform.LayerNorm.", "mlm.norm."),
        ("cls.seq_relationship.", "nsp."),
        *_TASK_HEADS,
    ],
    "roberta": [
        *_EMBEDDINGS,
        *_LAYERS,
        ("pooler.dense.", "pooler.dense."),
        ("lm_head.dense.", "mlm.dense."),
        ("lm_head.layer_norm.", "mlm.norm."),
        *_TASK_HEADS,
    ],
    "electra": [
        *_EMBEDDINGS,
        ("embeddings_project.", "embeddings.project."),
        *_LAYERS,
        ("generator_predictions.dense.", "mlm.dense."),
        ("generator_predictions.LayerNorm.", "mlm.norm."),
        *_TASK_HEADS,
    ],
    "distilbert": [
        *_EMBEDDINGS,
        ("transformer.layer.{i}.attention.out_lin.", "layers.{i}.attn.proj."),
        ("transformer.layer.{i}.sa_layer_norm.", "layers.{i}.attn_norm."),
        ("transformer.layer.{i}.ffn.lin1.", "layers.{i}.ffn.up."),
        ("transformer.layer.{i}.ffn.lin2.", "layers.{i}.ffn.down."),
        ("transformer.layer.{i}.output_layer_norm.", "layers.{i}.ffn_norm."),
        ("vocab_transform.", "mlm.dense."),
        ("vocab_layer_norm.", "mlm.norm."),
        ("pre_classifier.", "pre_classifier."),
        *_TASK_HEADS,
    ],
}
# Whole-name renames (no suffix): the masked-LM output bias.
EXACT: dict[str, dict[str, str]] = {
    "bert": {"cls.predictions.bias": "mlm.bias"},
    "roberta": {"lm_head.bias": "mlm.bias"},
    "electra": {"generator_lm_head.bias": "mlm.bias"},
    "distilbert": {"vocab_projector.bias": "mlm.bias"},
}
# Present in some checkpoints, carrying nothing the model needs: non-persistent buffers and the
# MLM decoder matrix, which is tied to the word embeddings.
IGNORED: dict[str, re.Pattern] = {
    k: re.compile(rf"^(embeddings\.(position_ids|token_type_ids)|{decoder})$")
    for k, decoder in [
        ("bert", r"cls\.predictions\.decoder\.weight"),
        ("roberta", r"lm_head\.decoder\.(weight|bias)"),
        ("electra", r"generator_lm_head\.weight"),
        ("distilbert", r"vocab_projector\.weight"),
    ]
}
# The three attention projections bertkit fuses: (HF name template, their names in q, k, v order)
QKV: dict[str, tuple[str, tuple[str, str, str]]] = {
    "bert": ("encoder.layer.{i}.attention.self.{w}.", ("query", "key", "value")),
    "roberta": ("encoder.layer.{i}.attention.self.{w}.", ("query", "key", "value")),
    "electra": ("encoder.layer.{i}.attention.self.{w}.", ("query", "key", "value")),
    "distilbert": ("transformer.layer.{i}.attention.{w}.", ("q_lin", "k_lin", "v_lin")),
}
ENCODER_PARTS = ("embeddings.", "layers.", "pooler.")


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)"))


_HF_TO_OURS = {k: [(_pattern(hf), ours) for hf, ours in table] for k, table in RENAMES.items()}
_OURS_TO_HF = {k: [(_pattern(ours), hf) for hf, ours in table] for k, table in RENAMES.items()}
_QKV_HF = {
    k: re.compile(
        "^"
        + re.escape(t).replace(r"\{i\}", r"(\d+)").replace(r"\{w\}", f"({'|'.join(w)})")
        + r"(weight|bias)$"
    )
    for k, (t, w) in QKV.items()
}


def _rename(name: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    for pat, template in table:
        m = pat.match(name)
        if m:
            return template.replace("{i}", m.groupdict().get("i") or "") + name[m.end() :]
    return None


def normalize_hf_name(name: str, family: Family) -> str:
    """Strip the family's encoder prefix (`bert.`, `roberta.`, ...) and turn legacy TF-era
    `gamma`/`beta` into `weight`/`bias`."""
    name = name.removeprefix(family.base)
    name = re.sub(r"\.gamma$", ".weight", name)
    name = re.sub(r"\.beta$", ".bias", name)
    return name.replace("cls.predictions.decoder.bias", "cls.predictions.bias")


def hf_to_bertkit(
    state: dict[str, torch.Tensor], family: Family
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """HF names of `family` -> bertkit names relative to the encoder/heads (no `bert.` prefix).
    Returns the mapped tensors and the original names that were not recognised."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = defaultdict(dict)
    key, (template, parts) = family.names, QKV[family.names]
    for orig, tensor in state.items():
        name = normalize_hf_name(orig, family)
        if IGNORED[key].match(name):
            continue
        m = _QKV_HF[key].match(name)
        if m:
            layer, which, kind = m.groups()
            qkv[(layer, kind)][which] = tensor
            continue
        new = EXACT[key].get(name) or _rename(name, _HF_TO_OURS[key])
        if new is None:
            unknown.append(orig)
        else:
            out[new] = tensor
    for (layer, kind), got in qkv.items():
        if len(got) == 3:
            out[f"layers.{layer}.attn.qkv.{kind}"] = torch.cat([got[w] for w in parts])
        else:  # an incomplete triple cannot be fused; report the pieces as unused
            unknown += [template.format(i=layer, w=w) + kind for w in got]
    return out, unknown


def bertkit_to_hf(
    state: dict[str, torch.Tensor], family: Family, bare: bool = False
) -> dict[str, torch.Tensor]:
    """bertkit names -> HF names of `family`; encoder tensors get the family's prefix (`bert.`,
    `roberta.`, ...) unless the model is a `bare` encoder."""
    out: dict[str, torch.Tensor] = {}
    key, (template, parts) = family.names, QKV[family.names]
    prefix = "" if bare else family.base
    reverse_exact = {ours: hf for hf, ours in EXACT[key].items()}
    for name, tensor in state.items():
        tensor = tensor.detach().contiguous()
        name = name.removeprefix("bert.")
        m = re.match(r"^layers\.(\d+)\.attn\.qkv\.(weight|bias)$", name)
        if m:
            layer, kind = m.groups()
            for which, part in zip(parts, tensor.chunk(3), strict=True):
                out[prefix + template.format(i=layer, w=which) + kind] = part.contiguous()
            continue
        hf = reverse_exact.get(name) or _rename(name, _OURS_TO_HF[key])
        if hf is None:
            raise ValueError(f"no Hugging Face name for parameter {name!r} in a {family.model_type} model")
        out[(prefix if name.startswith(ENCODER_PARTS) else "") + hf] = tensor
    return out


# ---- reading files ------------------------------------------------------------------------
def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BertkitError(f"not a readable safetensors file ({msg})", path) from None


def _load_pickle_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad file, reported in one line
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise BertkitError(
                "refused to load: the pickle holds objects other than tensors "
                f"(only weights_only=True loading is allowed; {first[:200]})",
                path,
            ) from None
        raise BertkitError(f"not a readable PyTorch weights file ({first[:200]})", path) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BertkitError("expected a mapping of parameter names to tensors", path)
    return state


def read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors of a model directory, from safetensors (single or sharded) or a legacy .bin."""
    if (directory / SAFE_WEIGHTS).is_file():
        return _load_safetensors(directory / SAFE_WEIGHTS), directory / SAFE_WEIGHTS
    if (directory / SAFE_INDEX).is_file():
        index_path = directory / SAFE_INDEX
        try:
            shards = sorted(set(json.loads(index_path.read_text("utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise BertkitError(f"not a valid safetensors index ({e})", index_path) from None
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            shard_path = (directory / shard).resolve()
            if shard_path.parent != directory.resolve():
                raise BertkitError(f"shard {shard!r} lies outside the model directory", index_path)
            state.update(_load_safetensors(shard_path))
        return state, index_path
    if (directory / PICKLE_WEIGHTS).is_file():
        return _load_pickle_weights(directory / PICKLE_WEIGHTS), directory / PICKLE_WEIGHTS
    raise BertkitError(f"no {SAFE_WEIGHTS} or {PICKLE_WEIGHTS} in the model directory", directory)


def _summarise(names: list[str]) -> str:
    """'layers.*.attn.qkv.weight (6)' rather than six lines."""
    groups: dict[str, int] = defaultdict(int)
    for n in names:
        groups[re.sub(r"\.\d+\.", ".*.", n)] += 1
    return ", ".join(f"{g} ({c})" if c > 1 else g for g, c in sorted(groups.items()))


# Which config field sizes each dimension of a parameter (bertkit names, no `bert.` prefix):
# (name pattern, ((field, divisor) per dimension)); the divisor undoes QKV's fusing of three.
_H = ("hidden_size", 1)
SHAPE_FIELDS: list[tuple[re.Pattern, tuple[tuple[str, int] | None, ...]]] = [
    (re.compile(p), dims)
    for p, dims in [
        (r"^embeddings\.word\.", (("vocab_size", 1), _H)),
        (r"^embeddings\.position\.", (("max_position_embeddings", 1), _H)),
        (r"^embeddings\.token_type\.", (("type_vocab_size", 1), _H)),
        (r"^layers\.\d+\.attn\.qkv\.", (("hidden_size", 3), _H)),
        (r"^layers\.\d+\.ffn\.up\.", (("intermediate_size", 1), _H)),
        (r"^layers\.\d+\.ffn\.down\.weight$", (_H, ("intermediate_size", 1))),
        (r"^classifier\.", (("num_labels", 1), _H)),
        (r"^mlm\.bias$", (("vocab_size", 1),)),
        (r"^(nsp|qa_outputs)\.", (None, _H)),
        (r"^layers\.\d+\.(attn\.proj|attn_norm|ffn\.down\.bias|ffn_norm)\.", (_H, _H)),
        (r"^(embeddings\.norm|pooler|mlm)\.", (_H, _H)),
    ]
]
_WHAT = {
    "vocab_size": "word embeddings",
    "max_position_embeddings": "position embeddings",
    "type_vocab_size": "token type embeddings",
    "hidden_size": "hidden dimensions",
    "intermediate_size": "feed-forward (intermediate) dimensions",
    "num_labels": "classifier outputs (labels)",
}


def _shape_error(key: str, got: tuple, want: tuple, config: BertConfig, weights: Path) -> str:
    """The message for a checkpoint tensor whose shape the config disagrees with, naming the
    config field at fault where the parameter's dimensions map to one."""
    shapes = f"{key!r} has shape {got} but the model built from the config expects {want}"
    name = key.removeprefix("bert.")
    dims = next((d for pat, d in SHAPE_FIELDS if pat.search(name)), ())
    same_rank = len(got) == len(want)
    at = next((i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w), 0) if same_rank else 0
    spec = dims[at] if same_rank and at < len(dims) else None
    if spec is None:
        return f"tensor for {shapes}"
    field, div = spec
    value = getattr(config, field)
    try:  # Name config.json when the value is its own, not one the caller set.
        source = "config.json" if getattr(BertConfig.from_pretrained(weights.parent), field) == value else ""
    except BertkitError:
        source = ""
    says = f"{source or 'the config given'} says {field} {value}"
    if field == "num_labels":
        says += " (the size of id2label)" if config.id2label else " (the default; id2label is not set)"
    return f"{says} but {weights.name} has {got[at] // div} {_WHAT[field]} ({shapes})"


class PretrainedMixin:
    """`from_pretrained` / `save_pretrained` for bertkit models (nn.Module subclasses that take a
    BertConfig). `encoder_prefix` is "bert." for models whose encoder sits in `self.bert`; on
    disk the encoder's prefix is the family's (`roberta.`, ...), the class name too
    (`BertForMaskedLM` on a RoBERTa config saves as `RobertaForMaskedLM`)."""

    encoder_prefix = ""
    config: BertConfig

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        config: BertConfig | None = None,
        dtype: torch.dtype | None = None,
        ignore_mismatched_sizes: bool = False,
        output_loading_info: bool = False,
        **model_kwargs: Any,
    ):
        """Load a Hugging Face-format directory (or a Hub name, see `bertkit.hub`). Heads absent
        from the checkpoint are freshly initialised and reported in one warning; weights the model
        does not use are reported too."""
        directory = resolve(directory)
        if not directory.is_dir():
            raise BertkitError("no such model directory", directory)
        config = config or BertConfig.from_pretrained(directory)
        # The mixin's classes are nn.Modules built from a config, which the mixin alone does not say.
        model: torch.nn.Module = cast(Any, cls)(config, **model_kwargs)
        raw, source = read_weights(directory)
        mapped, unknown = hf_to_bertkit(raw, config.family)
        expected = model.state_dict()
        state: dict[str, torch.Tensor] = {}
        unused = list(unknown)
        mismatched: list[str] = []
        for name, tensor in mapped.items():
            key = (cls.encoder_prefix if name.startswith(ENCODER_PARTS) else "") + name
            if key not in expected:
                unused.append(name)
                continue
            if tuple(tensor.shape) != tuple(expected[key].shape):
                if ignore_mismatched_sizes:
                    mismatched.append(key)
                    continue
                got, want = tuple(tensor.shape), tuple(expected[key].shape)
                raise BertkitError(_shape_error(key, got, want, config, source), source)
            state[key] = tensor
        missing = [k for k in expected if k not in state]
        model.load_state_dict(state, strict=False)
        if missing:
            log.warning("%s: newly initialised (not in the checkpoint): %s", directory, _summarise(missing))
        if unused:
            log.warning("%s: weights not used by %s: %s", directory, cls.__name__, _summarise(unused))
        if dtype is not None:
            model.to(dtype)
        model.eval()
        if output_loading_info:
            return model, {"missing_keys": missing, "unexpected_keys": unused, "mismatched_keys": mismatched}
        return model

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters under Hugging Face's names."""
        state = self.state_dict()  # type: ignore[attr-defined]
        return bertkit_to_hf(state, self.config.family, bare=not self.encoder_prefix)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json and model.safetensors (each atomically) in the HF layout."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.architectures = [
            self.config.family.architecture(type(self).__name__.removeprefix("Bert"))
        ]
        save_safetensors(self.hf_state_dict(), directory / SAFE_WEIGHTS)
        self.config.save_pretrained(directory)
