"""`hypura` entry point: one sub-command per module of `hypura.commands` (imported here, never the reverse).

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func``
(called with the parsed namespace, returning an exit status). Errors a user can cause
(bad file, unknown model, impossible budget) are printed as one line on stderr with exit
status 2 — never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .commands import config, create, inspect, models, plan, profile, ps, pull, run, serve
from .errors import USER_ERRORS

COMMANDS = ("run", "serve", "pull", "list", "ps", "show", "create", "cp", "rm", "stop", "profile", "inspect", "plan",
            "config")
_MODULES = {"run": run, "serve": serve, "profile": profile, "inspect": inspect, "plan": plan, "config": config,
            "pull": pull, "list": models, "show": models, "cp": models, "rm": models, "create": create, "ps": ps,
            "stop": ps}   # a module may register several commands (models: list/show/cp/rm; ps: ps/stop)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypura", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hypura {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: llama.cpp's too)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in dict.fromkeys(_MODULES[name] for name in COMMANDS):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:   # llama.cpp's own log (its errors included) only with -vv: ours says what failed
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: not record.name.startswith("llama.cpp"))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:   # `hypura inspect m.gguf --tensors | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit's flush
        return 141
    except USER_ERRORS as exc:
        print(f"hypura {args.command}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if not type(exc).__module__.startswith("hypura_llama"):   # LlamaError: llama.cpp refused the file
            raise
        print(f"hypura {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
