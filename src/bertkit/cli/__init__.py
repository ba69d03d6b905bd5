"""The `bertkit` command line: one small module per verb (`add_parser`, `run`), each thin over
the Python API; the flag groups they share are in `flags`, each built from the dataclass that
owns its settings (`options`). `main` maps user errors to one line
on stderr and exit status 2. The top floor: may import every package below; none imports it."""

from __future__ import annotations

import argparse
import logging
import sys

from bertkit.errors import BertkitError

VERBS = ("model", "text", "pretrain", "finetune", "distill", "evaluate", "search", "embed", "serve", "export")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="bertkit", description="BERT end to end on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in VERBS:
        importlib.import_module(f"bertkit.cli.{verb}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr()
    try:
        args.func(args)
    except BertkitError as e:
        print(f"bertkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the system refused a read or write: a full disk, no permission...
        print(f"bertkit: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    return 0


class StderrHandler(logging.Handler):
    """Log lines, bare, on whatever sys.stderr is when they are written."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def log_to_stderr() -> None:
    """The backend chosen (logger "bertkit.engine.backend") and what a directory fine-tuned by
    transformers was read as ("bertkit.tasks"), each one line on stderr."""
    for name in ("bertkit.engine.backend", "bertkit.tasks"):
        log = logging.getLogger(name)
        if not any(isinstance(h, StderrHandler) for h in log.handlers):
            log.addHandler(StderrHandler())
        log.setLevel(logging.INFO)


def describe_os_error(e: OSError) -> str:
    """One line: the file, what the system said, and what to do for the usual causes."""
    import errno

    where = f"{e.filename}: " if e.filename else ""
    hints: dict[int | None, str] = {
        errno.ENOSPC: "; free some space (nothing complete was replaced)",
        errno.EFBIG: "; the file size limit (ulimit -f) was reached (nothing complete was replaced)",
        errno.EROFS: "; choose a writable output location",
        errno.EACCES: "; check the permissions",
    }
    hint = hints.get(e.errno, "")
    return f"{where}{e.strerror or e}{hint}"
