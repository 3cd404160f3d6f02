"""`tiergate rules check FILE...` and `tiergate rules explain FILE --request req.json`.

`check` validates rules files as the server would load them. `explain` runs one OpenAI chat request body through
signal extraction, scoring and the rules, and prints the signals, each weighted signal's part in the score, and the
rule that would fire: what an operator needs to see why a request went where it did.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from gateway.wire import ChatCompletionRequest
from router.chat import ChatRequest
from router.errors import InvalidRequest
from router.rules import Decision, RulesError, RuleSet, load_rules
from router.scoring import Contribution
from router.sessions import SessionState
from router.signals import SignalContext, Signals, extract_signals

DEFAULT_LOCAL_CONTEXT = 8192


def rules_main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run a `tiergate rules` subcommand. 0: all good; 1: a file is invalid; 2: bad usage."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "check":
        return _check(args.files, out, err)
    return _explain(args, out, err)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiergate rules", description="Validate and try out escalation rules.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="Validate rules files.")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    explain = sub.add_parser("explain", help="Show the signals, score and rule for one request.")
    explain.add_argument("file", type=Path, metavar="FILE", help="The rules file.")
    explain.add_argument("--request", type=Path, required=True, help="An OpenAI chat completion request body (JSON).")
    explain.add_argument("--local-context", type=int, default=DEFAULT_LOCAL_CONTEXT, help="Local context window.")
    explain.add_argument("--local-prompt-tokens", type=int, help="The prompt's local size, if known (else estimated).")
    explain.add_argument("--queue-depth", type=int, default=0, help="Requests waiting for the local model.")
    explain.add_argument("--tag", action="append", default=[], help="A policy tag of the API key (repeatable).")
    explain.add_argument("--session-steps", type=int, default=0)
    explain.add_argument("--session-corrections", type=int, default=0)
    explain.add_argument("--session-stalls", type=int, default=0)
    explain.add_argument("--session-escalations", type=int, default=0)
    explain.add_argument("--json", action="store_true", help="Print one JSON object instead of a report.")
    return parser


def _check(files: list[Path], out: TextIO, err: TextIO) -> int:
    status = 0
    for path in files:
        try:
            rules = load_rules(path)
        except RulesError as exc:
            print(f"invalid: {exc}", file=err)
            status = 1
            continue
        print(f"ok: {path}: version {rules.version}, {len(rules.rules)} rules, threshold {rules.threshold:g}", file=out)
    return status


def _explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        rules = load_rules(args.file)
        request = _read_request(args.request)
    except (RulesError, _RequestFileError) as exc:
        print(f"invalid: {exc}", file=err)
        return 1
    context = SignalContext(
        local_context_tokens=args.local_context,
        local_prompt_tokens=args.local_prompt_tokens,
        local_queue_depth=args.queue_depth,
        session=SessionState(
            steps=args.session_steps,
            corrections=args.session_corrections,
            stalls=args.session_stalls,
            escalations=args.session_escalations,
        ),
        policy_tags=frozenset(args.tag),
    )
    signals = extract_signals(request, context)
    score, parts = rules.explain_score(signals)
    routed = request.model == "auto"
    decision = rules.decide(signals, request) if routed else rules.enforced(signals, request)
    if args.json:
        print(json.dumps(_as_json(rules, signals, score, parts, decision, request.model), indent=2), file=out)
    else:
        _report(out, args, rules, signals, score, parts, decision, request.model)
    return 0


class _RequestFileError(Exception):
    pass


def _read_request(path: Path) -> ChatRequest:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _RequestFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise _RequestFileError(f"{path}: not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _RequestFileError(f"{path}: a chat completion request is a JSON object")
    try:
        return ChatCompletionRequest.model_validate(body).to_internal(request_id="explain", raw=body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise _RequestFileError(f"{path}: {where}: {first['msg']}") from None
    except InvalidRequest as exc:
        raise _RequestFileError(f"{path}: {exc.message}") from None


def _report(
    out: TextIO,
    args: argparse.Namespace,
    rules: RuleSet,
    signals: Signals,
    score: float,
    parts: list[Contribution],
    decision: Decision | None,
    model: str,
) -> None:
    print(
        f"rules    {rules.source} (version {rules.version}, {len(rules.rules)} rules, threshold {rules.threshold:g})",
        file=out,
    )
    print(f"request  {args.request} (model {model})", file=out)
    print("\nsignals", file=out)
    for name, value in _signal_items(signals):
        print(f"  {name:<22} {value}", file=out)
    print(f"\nscore    {score:.3f}", file=out)
    print(f"  {'signal':<22} {'value':>10} {'feature':>8} {'logit':>8}", file=out)
    print(f"  {'(bias)':<22} {'':>10} {'':>8} {rules.scorer.bias:+8.3f}", file=out)
    idle = [c.signal for c in parts if c.term == 0]
    for c in parts:
        if c.term != 0:
            print(f"  {c.signal:<22} {c.value:>10g} {c.feature:>8.3f} {c.term:+8.3f}", file=out)
    if idle:
        print(f"  at zero: {', '.join(idle)}", file=out)
    print("", file=out)
    if decision is None:
        print(f"decision model {model!r} names its tier or model; no enforced rule matched, so it keeps it", file=out)
        return
    target = decision.action + (f" ({decision.model})" if decision.model else "")
    print(f"decision {target} by rule {decision.rule!r}: {decision.reason}", file=out)
    print(f"  fallback to the other tier {'allowed' if decision.allow_fallback else 'not allowed'}", file=out)
    if decision.message:
        print(f"  message: {decision.message}", file=out)


def _signal_items(signals: Signals) -> list[tuple[str, str]]:
    items = []
    for name in signals.__dataclass_fields__:
        value = getattr(signals, name)
        items.append((name, ",".join(value) if isinstance(value, tuple) else str(value)))
    return items


def _as_json(
    rules: RuleSet,
    signals: Signals,
    score: float,
    parts: list[Contribution],
    decision: Decision | None,
    model: str,
) -> dict[str, Any]:
    return {
        "rules": {"source": rules.source, "version": rules.version, "threshold": rules.threshold},
        "model": model,
        "signals": {name: getattr(signals, name) for name in signals.__dataclass_fields__},
        "score": score,
        "contributions": [{"signal": c.signal, "value": c.value, "feature": c.feature, "term": c.term} for c in parts],
        "decision": None if decision is None else asdict(decision),
    }
