"""`skdd <stage>`: the command line DVC stages call.

Params come from a `params.yaml` section named after the stage, then `--set key=value` overrides.
A `SkddError` prints as one line on stderr with exit code 2; success prints the output's manifest
summary. Stages are looked up in one registry (`skdd.stages.registry`) so the CLI, DVC and Kubeflow call the
same functions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from skdd.errors import SkddError
from skdd.stages.registry import STAGES, run_stage


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skdd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for stage, spec in STAGES.items():
        p = sub.add_parser(stage, help=spec.help or f"run the {stage} stage")
        p.add_argument("--out", required=True, help="output artifact (a local folder or s3://bucket/prefix)")
        for name in spec.inputs:
            p.add_argument(f"--{name}", required=True, help=f"input {name} artifact (a local folder or s3://bucket/prefix)")
        for name in spec.optional:
            p.add_argument(f"--{name}", default=None,
                           help=f"input {name} artifact, when the params need one (a local folder or s3://bucket/prefix)")
        p.add_argument("--params", default=None,
                       help="params file (default: ./params.yaml when present, else built-in defaults)")
        p.add_argument("--section", default=None, help=f"section of the params file (default: {stage})")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one param (repeatable)")
    # `skdd export --format X` is shorthand for `--set format=X` (validated with the other params)
    sub.choices["export"].add_argument("--format", dest="overrides", action="append", type=lambda v: f"format={v}",
                                       metavar="{imagefolder,tensors,both}", help="what to write (default: both)")
    lin = sub.add_parser("lineage", help="show or verify an artifact's ancestry")
    lin.add_argument("action", choices=("show", "verify"))
    lin.add_argument("uri", help="an artifact (a local folder or s3://bucket/prefix)")
    lin.add_argument("--json", action="store_true", help="machine-readable tree")
    lin.add_argument("--key", action="store_true",
                     help="also require every manifest of the ancestry to be signed with the key in $SKDD_SIGNING_KEY "
                          "(the key is read from the environment only, never from the command line)")
    from skdd import pipeline_cli

    pipeline_cli.add_parser(sub)   # `skdd pipeline compile|submit`
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "pipeline":
        from skdd import pipeline_cli

        return pipeline_cli.main(args)
    if args.command == "lineage":
        from skdd import audit

        try:
            return audit.main(args.action, args.uri, args.json, key=args.key)
        except SkddError as exc:
            print(f"skdd lineage: error: {exc}", file=sys.stderr)
            return 2
    try:
        params_file = args.params
        if params_file is None and Path("params.yaml").is_file():
            params_file = "params.yaml"
        spec = STAGES[args.command]
        inputs = {name: getattr(args, name) for name in (*spec.inputs, *spec.optional) if getattr(args, name)}
        manifest = run_stage(args.command, output=args.out, inputs=inputs, params_file=params_file,
                             overrides=args.overrides, section=args.section)
    except SkddError as exc:
        print(f"skdd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"skdd {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    summary = {"output": args.out, "kind": manifest["kind"], "files": len(manifest["files"]),
               "metrics": manifest.get("metrics", {})}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
