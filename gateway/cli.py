"""The `tiergate` command. Subcommands import what they need when they run, so `tiergate --help` stays instant."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

# Subcommands owned by other packages: name -> (module, function, help). Each takes the remaining argv.
_DELEGATED: dict[str, tuple[str, str, str]] = {
    "rules": ("router.explain", "rules_main", "check a rules file, or explain the decision for a request"),
    "db": ("gateway.ledger.cli", "db_main", "apply (upgrade) or revert (downgrade) the ledger's migrations"),
    "report": ("gateway.ledger.cli", "report_main", "cost per successful outcome, by tier, rule, model or day"),
    "eval-compression": ("prompt_compression.evaluation", "main", "token reduction and tool recall on BFCL"),
    "eval-router": ("router.evaluation.cli", "main", "RouteLLM's APGR / CPT metrics of a scorer on outcome data"),
    "train-router": ("router.evaluation.cli", "train_main", "train the learned complexity scorer"),
    "calibrate": ("router.evaluation.calibration", "main", "set a rules file's score threshold for an escalation rate"),
    "replay": ("router.evaluation.replay", "main", "re-score logged requests under another rules file"),
    "keys": ("gateway.auth.cli", "main", "create, list and revoke client API keys"),
    "export": ("gateway.ledger.export", "main", "export agent trajectories for training (flow-grpo, sft)"),
}


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.settings import ConfigError, load_settings

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"tiergate: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiergate", description="Hybrid small/frontier routing LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    serve.add_argument("--config", type=Path, default=None, help="YAML config file (default: embedded defaults)")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8080)")
    serve.set_defaults(handler=_serve)
    for name, (_, _, help_text) in _DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        module_name, function_name, _ = _DELEGATED[argv[0]]
        module = __import__(module_name, fromlist=[function_name])
        entry: Callable[[list[str]], int] = getattr(module, function_name)
        return entry(argv[1:])
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
