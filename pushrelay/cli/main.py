"""Entry point of the ``pushrelay`` console script.

Each subcommand module exposes ``register(subparsers)``; the parser it adds sets
``func(args) -> int``. The production commands are ordinary imports. Development
tooling (``pushrelay devstack``, ``pushrelay demo``) lives in the separate
``pushrelay-devstack`` distribution and registers itself through the
``pushrelay.commands`` entry-point group, so nothing here imports it; when it is
not installed those commands say how to get it (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeAlias

from pushrelay.cli import explain, publish, services, visibility
from pushrelay.infra.kube.errors import KubeConfigError

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
Register: TypeAlias = Callable[["Subparsers"], None]

#: The entry-point group development tools register their commands in.
PLUGIN_GROUP = "pushrelay.commands"
#: Commands provided by the ``pushrelay-devstack`` distribution, in help order.
DEV_COMMANDS = {
    "devstack": "real etcd + kube-apiserver + Kafka on loopback (development tooling)",
    "demo": "run the whole pipeline locally with a sample push (development tooling)",
}
INSTALL_HINT = (
    "`pushrelay {name}` is development tooling from the pushrelay-devstack "
    "distribution, which is not installed{why}. From a clone of the repository: "
    "`make install`, or `pip install -e ./devstack`."
)


def _plugins() -> dict[str, Register | str]:
    """Registered plugin commands: their ``register``, or why it cannot be loaded."""
    found: dict[str, Register | str] = {}
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            found[point.name] = point.load()
        except ImportError as exc:
            found[point.name] = f" (it failed to load: {exc})"
    return found


def _unavailable(sub: Subparsers, name: str, why: str) -> None:
    # Any arguments at all (no option is recognised: the real parser is missing).
    # Not listed by --help (the production image offers the services only), but
    # answered with how to install it.
    parser = sub.add_parser(name, add_help=False, prefix_chars="\0")
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)

    def explain_missing(_: argparse.Namespace) -> int:
        print(f"pushrelay: {INSTALL_HINT.format(name=name, why=why)}", file=sys.stderr)
        return 2

    parser.set_defaults(func=explain_missing)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pushrelay",
        description="Quay.io push webhooks to Kargo Warehouse refreshes, over Kafka.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    services.register(sub)
    plugins = _plugins()
    for name in DEV_COMMANDS:
        plugin = plugins.pop(name, "")
        if isinstance(plugin, str):
            _unavailable(sub, name, plugin)
        else:
            plugin(sub)
    for module in (publish, explain, visibility):
        module.register(sub)
    for plugin in plugins.values():  # other tools, after ours
        if not isinstance(plugin, str):
            plugin(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KubeConfigError as exc:
        print(f"pushrelay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
