"""Entry point of the ``pushrelay`` console script.

Each subcommand lives in its own module under ``pushrelay.cli`` and exposes
``register(subparsers)``; the parser it adds sets ``func(args) -> int``.
Modules are imported lazily by name so a broken optional dependency of one
subcommand never breaks the others. The devstack (dev tooling) is absent from
the production image: its subcommands are then simply not offered.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Packages a subcommand may need that an installation may lack on purpose.
OPTIONAL_PACKAGES = ("pushrelay.devstack",)

# Order is the order shown by ``pushrelay --help``.
COMMAND_MODULES = (
    "pushrelay.cli.services",
    "pushrelay.cli.devstack",
    "pushrelay.cli.demo",
    "pushrelay.cli.publish",
    "pushrelay.cli.explain",
    "pushrelay.cli.visibility",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pushrelay",
        description="Quay.io push webhooks to Kargo Warehouse refreshes, over Kafka.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name or _is_optional(exc.name):
                continue  # subcommand not written yet, or its tooling not installed
            raise
        module.register(sub)
    return parser


def _is_optional(module: str | None) -> bool:
    return module is not None and any(
        module == pkg or module.startswith(pkg + ".") for pkg in OPTIONAL_PACKAGES
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
