"""``python -m pipelines COMMAND RUN ...``: the pipeline subcommands without the rest of the ``t3vis`` CLI."""

import argparse
import sys

from t3vis.errors import T3VisError

from .commands import register


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description="t3vis Dask pipelines")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except T3VisError as exc:
        print(f"t3vis: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
