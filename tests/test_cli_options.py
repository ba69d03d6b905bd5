"""Every setting's default is written once, in its dataclass: the flags that set a dataclass field
are built from it, and a command run with no options gets the dataclass's defaults."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from bertkit.cli import build_parser, flags
from bertkit.cli.options import add_options, build, given
from bertkit.data.examples import ReaderOptions
from bertkit.data.shards import ShardOptions
from bertkit.engine.runner import InferenceOptions
from bertkit.options import flag_of, option, options_of
from bertkit.runtime import RuntimeArgs
from bertkit.serve.limits import Limits
from bertkit.tasks import registry
from bertkit.tasks.options import DecisionOptions, TaskOptions
from bertkit.tokenization.vocab import VocabOptions
from bertkit.training.distill_student import DistillArgs
from bertkit.training.loop import TrainArgs
from bertkit.training.pretrain_args import PretrainArgs, pretrain_defaults
from bertkit.training.run import CheckpointOptions

# the settings' dataclasses, and the commands whose flags they own (None: every command's)
OWNERS = {TrainArgs: None, RuntimeArgs: None, Limits: None, ShardOptions: None, VocabOptions: None}
OWNERS[InferenceOptions] = OWNERS[ReaderOptions] = OWNERS[TaskOptions] = OWNERS[DecisionOptions] = None
OWNERS |= {group: None for _, group in registry.flag_groups()}  # each task's own flags
OWNERS[PretrainArgs] = {"pretrain"}
OWNERS[DistillArgs] = {"distill"}
OWNERS[CheckpointOptions] = {"finetune", "distill"}  # pretrain's are PretrainArgs'
# flags that share a name with a setting above and set something else
ELSEWHERE = {("init", "--seed"): "the initial weights' seed", ("export", "--int8"): "an int8 ONNX graph"}
ELSEWHERE[("embed", "--max-length")] = "the embedding model's truncation"
ELSEWHERE[("evaluate", "--unknown-label")] = "labels a trained model does not know"


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for every command and sub-command."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def test_every_flag_of_a_setting_is_built_from_its_dataclass():
    checked, found = 0, []
    for path, parser in commands(build_parser()):
        owned: dict[str, set[type]] = {}
        for cls, where in OWNERS.items():
            for f in options_of(cls).values():
                if where is None or path[-1:] and path[-1] in where:
                    owned.setdefault(flag_of(f), set()).add(cls)
        for action in parser._actions:
            for flag in action.option_strings:
                if flag in owned and (path[-1], flag) not in ELSEWHERE:
                    checked += 1
                    where = f"bertkit {' '.join(path)} {flag}"
                    found.append(where) if getattr(action, "option_of", None) not in owned[flag] else None
    assert not found, f"written by hand: {found}"
    assert checked > 50  # training, runtime and server flags across the commands


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "defaults"),
    [
        (
            ("finetune", "--task", "classify", "--model", "m", "--train", "t", "--dev", "d", "--output", "o"),
            TrainArgs(),
        ),
        (("pretrain", "--corpus", "c", "--output", "o"), pretrain_defaults()),
    ],
)
def test_training_flags_left_out_give_the_dataclass_defaults(argv, defaults):
    assert flags.train_args(parse(*argv), defaults) == defaults


def test_runtime_and_server_flags_left_out_give_the_dataclass_defaults(monkeypatch):
    for name in ("BERTKIT_DEVICE", "BERTKIT_PRECISION", "BERTKIT_THREADS"):
        monkeypatch.delenv(name, raising=False)
    args = parse("serve", "--model", "m")
    assert build(args, Limits()) == Limits()
    assert (
        build(parse("shards", "--corpus", "c", "--tokenizer", "t", "--output", "o"), ShardOptions())
        == ShardOptions()
    )
    assert RuntimeArgs.from_env(**given(args, RuntimeArgs)) == RuntimeArgs()
    monkeypatch.delenv("BERTKIT_BACKEND", raising=False)
    assert flags.engine(args) == InferenceOptions()


def test_every_task_contributes_its_own_flag_group():
    titles = [title for title, _ in registry.flag_groups()]
    assert titles == ["classify", "ner", "multi-label"]
    help_text = build_parser()._subparsers._group_actions[0].choices["finetune"].format_help()
    for title in titles:
        assert f"\n{title}:\n" in help_text


def test_flags_given_reach_the_dataclass():
    args = parse("serve", "--model", "m", "--max-texts", "7", "--max-wait-ms", "2.5", "--precision", "fp32")
    assert build(args, Limits()) == Limits(max_texts=7, max_wait_ms=2.5)
    assert given(args, RuntimeArgs) == {"precision": "fp32"}
    argv = ("finetune", "--task", "classify", "--model", "m", "--train", "t", "--dev", "d", "--output", "o")
    targs = flags.train_args(
        parse(*argv, "--quiet", "--no-group-by-length", "--on-nonfinite", "stop"), TrainArgs()
    )
    assert (targs.progress, targs.group_by_length, targs.nonfinite) == (False, False, "stop")


def test_a_flag_group_from_a_dataclass():
    @dataclasses.dataclass
    class Settings:
        size: int = option(3, help="how many (default {default})")
        name: str | None = option(None, unset=True, choices=("a", "b"), help="which one")
        loud: bool = option(True, flag="--quiet", negated=True, help="say less")
        ratio: float = option(0.5, help="a share (default {default:g}{more})")
        internal: int = 9  # not a flag

    p = argparse.ArgumentParser()
    add_options(p, Settings(), ("size", "name", "loud", "ratio"), {"ratio": {"more": "; or 1"}})
    help_text = p.format_help()
    assert "how many (default 3)" in help_text and "a share (default 0.5; or 1)" in help_text
    assert "--internal" not in help_text
    args = p.parse_args(["--size", "5", "--quiet"])
    assert build(args, Settings()) == Settings(size=5, loud=False)
    assert build(p.parse_args(["--name", "b", "--ratio", "1"]), Settings()) == Settings(name="b", ratio=1.0)
    with pytest.raises(SystemExit):
        p.parse_args(["--name", "c"])


def test_reader_options_are_typed_and_a_given_zero_column_counts(tmp_path):
    from bertkit.data.examples import ReaderOptions
    from bertkit.tasks.classify import ClassifyTask
    from bertkit.tasks.inputs import reader_opts

    path = tmp_path / "train.tsv"
    path.write_text("label\tsentence\npos\tgood\nneg\tbad\n", encoding="utf-8")
    got = registry.load_examples("classify", path, text_column="sentence", label_column="label")
    assert [(e.text, e.label) for e in got] == [("good", "pos"), ("bad", "neg")]
    with pytest.raises(TypeError):
        registry.load_examples("classify", path, txt_column="sentence")  # a typo is not ignored
    merged = reader_opts(ClassifyTask(None), ReaderOptions(tag_column=0, text_column="t"))
    assert (merged.regression, merged.tag_column, merged.text_column) == (True, 0, "t")
