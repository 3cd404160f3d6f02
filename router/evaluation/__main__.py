"""`python -m router.evaluation eval-router|train-router ...`: the same commands as `tiergate eval-router` and
`tiergate train-router`, runnable without the `tiergate` entry point."""

from __future__ import annotations

import sys

from router.evaluation.cli import main, train_main

COMMANDS = {"eval-router": main, "train-router": train_main}


def run(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m router.evaluation {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:], prog=f"python -m router.evaluation {argv[0]}")


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
