"""Models named as well as given as folders: `org/name[@revision]` through the Hugging Face cache.

`resolve("roberta-base")` is the cached snapshot folder of that model (HF_HOME, HF_HUB_CACHE),
downloaded first when the Hub can be reached; with `HF_HUB_OFFLINE=1` only the cache is read.
A folder that exists always wins over a name. What is fetched: the config, the safetensors
weights (a legacy pytorch_model.bin only where there are none), the tokenizer's files and a
sentence-transformers model's module files — never TensorFlow, Flax or ONNX copies.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bertkit.errors import BertkitError

FILES = [
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "2_Normalize/*",
]
# a Hub id: "name" or "org/name", letters, digits, "-", "_", "."
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def is_name(text: str) -> bool:
    """Whether `text` reads as a Hub id with an optional @revision (not a path)."""
    repo = text.partition("@")[0]
    return bool(_ID.match(repo)) and not repo.startswith((".", "/")) and ".." not in repo


def resolve(model: str | os.PathLike) -> Path:
    """The folder `model` names: itself when it exists; else, for a Hub id, its snapshot in the
    Hugging Face cache (fetched when online). Anything else comes back as given, for the caller
    to report as a missing folder."""
    path = Path(model)
    text = os.fspath(model)
    if path.exists() or not is_name(text):
        return path
    repo, _, revision = text.partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of bertkit and of tokenizers
        return path
    try:
        folder = Path(snapshot_download(repo, revision=revision or None, allow_patterns=FILES))
        if not list(folder.glob("*.safetensors")) and not (folder / "pytorch_model.bin").exists():
            pattern = [*FILES, "pytorch_model.bin"]
            folder = Path(snapshot_download(repo, revision=revision or None, allow_patterns=pattern))
    except Exception as e:  # noqa: BLE001 - the hub's errors (offline, not found, network) vary
        raise BertkitError(_why(repo, revision, e), text) from None
    return folder


def _why(repo: str, revision: str, e: Exception) -> str:
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE
    at = f" at revision {revision}" if revision else ""
    kind = type(e).__name__
    if constants.HF_HUB_OFFLINE or "Offline" in kind or "LocalEntryNotFound" in kind:
        reach = "the Hub is not reachable (offline)"
    elif "RepositoryNotFound" in kind or "RevisionNotFound" in kind:
        reach = "the Hub has no such model" + ("" if not revision else " or revision")
    else:
        reach = f"the Hub could not be reached ({kind})"
    return f"no such folder, not in the Hugging Face cache ({cache}){at}, and {reach}"
