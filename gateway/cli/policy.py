"""``interlock policy explain``: which rules apply to a tool, and why."""

from __future__ import annotations

import argparse
import json
import sys

from gateway.cli.pins import upstream_names
from gateway.config import Config, ConfigError, PolicyContext, explain_text
from gateway.pipeline import load_policies


def cmd_explain(args: argparse.Namespace, config: Config) -> int:
    try:
        call_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        print(f"--args: not valid JSON ({exc})", file=sys.stderr)
        return 2
    if not isinstance(call_args, dict):
        print("--args: expected a JSON object", file=sys.stderr)
        return 2
    try:
        policies = load_policies(config.policies_dir) if config.policies_dir else None
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if policies is None:
        print("no policies folder configured", file=sys.stderr)
        return 2
    targets = upstream_names(config, args.tool)
    if not targets:
        print(f"{args.tool}: no configured server could expose this name", file=sys.stderr)
        return 1
    for server, tool in targets:
        ctx = PolicyContext(server=server, tool=tool, exposed=args.tool, client=args.client, args=call_args)
        print(explain_text(policies, ctx))
    return 0
