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
from bertkit.models.config import BertConfig

log = logging.getLogger("bertkit")

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = "pytorch_model.bin"

# (Hugging Face name, bertkit name) prefixes; {i} is a layer index. The QKV projections are
# handled separately because bertkit fuses three HF tensors into one.
RENAMES: list[tuple[str, str]] = [
    ("embeddings.word_embeddings.", "embeddings.word."),
    ("embeddings.position_embeddings.", "embeddings.position."),
    ("embeddings.token_type_embeddings.", "embeddings.token_type."),
    ("embeddings.LayerNorm.", "embeddings.norm."),
    ("encoder.layer.{i}.attention.output.dense.", "layers.{i}.attn.proj."),
    ("encoder.layer.{i}.attention.output.LayerNorm.", "layers.{i}.attn_norm."),
    ("encoder.layer.{i}.intermediate.dense.", "layers.{i}.ffn.up."),
    ("encoder.layer.{i}.output.dense.", "layers.{i}.ffn.down."),
    ("encoder.layer.{i}.output.LayerNorm.", "layers.{i}.ffn_norm."),
    ("pooler.dense.", "pooler.dense."),
    ("cls.predictions.transform.dense.", "mlm.dense."),
    ("cls.predictions.transform.LayerNorm.", "mlm.norm."),
    ("cls.seq_relationship.", "nsp."),
    ("classifier.", "classifier."),
    ("qa_outputs.", "qa_outputs."),
]
# Whole-name renames (no suffix).
EXACT: list[tuple[str, str]] = [("cls.predictions.bias", "mlm.bias")]
# Present in some checkpoints, carrying nothing the model needs: a non-persistent buffer and
# the MLM decoder matrix, which is tied to the word embeddings.
IGNORED = re.compile(r"^(embeddings\.position_ids|cls\.predictions\.decoder\.weight)$")
ENCODER_PARTS = ("embeddings.", "layers.", "pooler.")
QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)"))


_HF_TO_OURS = [(_pattern(hf), ours) for hf, ours in RENAMES]
_OURS_TO_HF = [(_pattern(ours), hf) for hf, ours in RENAMES]


def _rename(name: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    for pat, template in table:
        m = pat.match(name)
        if m:
            return template.replace("{i}", m.groupdict().get("i") or "") + name[m.end() :]
    return None


def normalize_hf_name(name: str) -> str:
    """Strip the `bert.` prefix and turn legacy TF-era `gamma`/`beta` into `weight`/`bias`."""
    if name.startswith("bert."):
        name = name[len("bert.") :]
    name = re.sub(r"\.gamma$", ".weight", name)
    name = re.sub(r"\.beta$", ".bias", name)
    name = name.replace("cls.predictions.decoder.bias", "cls.predictions.bias")
    return name


def hf_to_bertkit(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """HF names -> bertkit names relative to the encoder/heads (no `bert.` prefix).
    Returns the mapped tensors and the original names that were not recognised."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = defaultdict(dict)
    for orig, tensor in state.items():
        name = normalize_hf_name(orig)
        if IGNORED.match(name):
            continue
        m = QKV.match(name)
        if m:
            layer, which, kind = m.groups()
            qkv[(layer, kind)][which] = tensor
            continue
        exact = dict(EXACT).get(name)
        new = exact or _rename(name, _HF_TO_OURS)
        if new is None:
            unknown.append(orig)
        else:
            out[new] = tensor
    for (layer, kind), parts in qkv.items():
        if len(parts) == 3:
            out[f"layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
        else:  # an incomplete triple cannot be fused; report the pieces as unused
            unknown += [f"encoder.layer.{layer}.attention.self.{w}.{kind}" for w in parts]
    return out, unknown


def bertkit_to_hf(state: dict[str, torch.Tensor], encoder_prefix: str) -> dict[str, torch.Tensor]:
    """bertkit names -> HF names; encoder tensors get `encoder_prefix` ("bert." for head models)."""
    out: dict[str, torch.Tensor] = {}
    reverse_exact = {ours: hf for hf, ours in EXACT}
    for name, tensor in state.items():
        tensor = tensor.detach().contiguous()
        if name.startswith("bert."):
            name = name[len("bert.") :]
        m = re.match(r"^layers\.(\d+)\.attn\.qkv\.(weight|bias)$", name)
        if m:
            layer, kind = m.groups()
            for which, part in zip(("query", "key", "value"), tensor.chunk(3), strict=True):
                out[f"{encoder_prefix}encoder.layer.{layer}.attention.self.{which}.{kind}"] = (
                    part.contiguous()
                )
            continue
        hf = reverse_exact.get(name) or _rename(name, _OURS_TO_HF)
        if hf is None:
            raise ValueError(f"no Hugging Face name for parameter {name!r}")
        out[(encoder_prefix if name.startswith(ENCODER_PARTS) else "") + hf] = tensor
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
    BertConfig). `encoder_prefix` is "bert." for models whose encoder sits in `self.bert`."""

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
        """Load a Hugging Face-format directory. Heads absent from the checkpoint are freshly
        initialised and reported in one warning; weights the model does not use are reported too."""
        directory = Path(directory)
        if not directory.is_dir():
            raise BertkitError("no such model directory", directory)
        config = config or BertConfig.from_pretrained(directory)
        # The mixin's classes are nn.Modules built from a config, which the mixin alone does not say.
        model: torch.nn.Module = cast(Any, cls)(config, **model_kwargs)
        raw, source = read_weights(directory)
        mapped, unknown = hf_to_bertkit(raw)
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
        return bertkit_to_hf(self.state_dict(), self.encoder_prefix)  # type: ignore[attr-defined]

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json and model.safetensors (each atomically) in the HF layout."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.architectures = [type(self).__name__]
        save_safetensors(self.hf_state_dict(), directory / SAFE_WEIGHTS)
        self.config.save_pretrained(directory)
