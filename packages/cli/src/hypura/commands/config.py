"""`hypura config [--json]`: the effective configuration and where each value came from."""
from __future__ import annotations

import argparse
import json
import sys

from ..config import FLAGS, Config, load_config
from ..errors import USER_ERRORS


def add_config_flags(parser: argparse.ArgumentParser, keys: tuple[str, ...] = tuple(FLAGS)) -> None:
    """Add the configuration flags (``--gpu-budget`` ...) for ``keys`` to a command's parser; default None."""
    helps = {"gpu_budget": "GPU memory budget, e.g. 8G (default: measured free minus a margin)",
             "ram_budget": "RAM budget, e.g. 16GiB (default: measured available minus a margin)",
             "models_dir": "directory holding the models", "host": "address to listen on",
             "port": "port to listen on", "ctx": "context size in tokens",
             "draft": "speculative decoding for a served model: NAME=ngram or NAME=DRAFT_MODEL (repeatable)",
             "draft_max": "at most this many drafted tokens a pass"}
    for key in keys:
        parser.add_argument(FLAGS[key], dest=key, default=None, metavar=key.split("_")[-1].upper(),
                            help=helps[key], **({"action": "append"} if key == "draft" else {}))


def _show(value: object) -> str:
    if value is None:
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 << 20:
        return f"{value} ({value / (1 << 30):.2f} GiB)"
    return str(value)


def format_config(config: Config) -> str:
    """A readable table: key, value, source."""
    rows = [(key, _show(value), source) for key, value, source in config.items()]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"config file: {config.path}{'' if config.path.exists() else ' (not present)'}"]
    lines += [f"  {k:<{width[0]}}  {v:<{width[1]}}  {s}" for k, v, s in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the effective configuration (JSON with ``--json``)."""
    config = load_config(vars(args))
    print(json.dumps(config.as_dict(), indent=2) if args.json else format_config(config))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `hypura config`."""
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_config_flags(parser)
    parser.set_defaults(func=run, command="config")


def register(subparsers) -> None:
    """Add `hypura config`."""
    add_arguments(subparsers.add_parser("config", help="show the effective configuration and its sources",
                                        description=__doc__))


def main(argv: list[str] | None = None) -> int:
    """`python -m hypura.commands.config`: the same command without the dispatcher."""
    parser = argparse.ArgumentParser(prog="hypura config", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except USER_ERRORS as exc:
        print(f"hypura config: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
