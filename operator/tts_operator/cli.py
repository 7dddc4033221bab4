"""`tts-operator`: run the operator (wrapping `kopf run`) or print/write/check the CRD."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from tts_operator import crdgen


def _crd(args: argparse.Namespace) -> int:
    if args.check:
        path = Path(args.check)
        if not path.exists() or path.read_text() != crdgen.render():
            print(f"{path} is stale: run `make crds`", file=sys.stderr)
            return 1
        return 0
    if args.write:
        print(f"wrote {crdgen.write(Path(args.write))}")
        return 0
    sys.stdout.write(crdgen.render())
    return 0


def _docs(args: argparse.Namespace) -> int:
    from tts_operator import docgen

    for path in [Path(p) for p in args.write] or list(docgen.DOC_PATHS):
        print(f"wrote {docgen.write(path)}")
    return 0


def _run(_: argparse.Namespace) -> int:
    from tts_operator.settings import OperatorSettings

    try:
        settings = OperatorSettings()
    except ValidationError as err:
        print(f"tts-operator: invalid TTS_OPERATOR_* setting:\n{err}", file=sys.stderr)
        return 2
    # Imported here so `tts-operator crd` works without kopf and the Kubernetes client.
    from kubernetes.config import ConfigException

    from tts_operator.runner import run

    try:
        run(settings)
    except OSError as err:  # e.g. the metrics port is taken
        print(f"tts-operator: cannot start: {err}", file=sys.stderr)
        return 2
    except ConfigException as err:
        print(
            f"tts-operator: no Kubernetes credentials (KUBECONFIG or in-cluster): {err}",
            file=sys.stderr,
        )
        return 2
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tts-operator", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the operator (settings from TTS_OPERATOR_* env vars; KUBECONFIG or "
        "in-cluster credentials)",
    )
    run.set_defaults(func=_run)
    crd = sub.add_parser("crd", help="print the TTSService CRD generated from the models")
    group = crd.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", help=f"write it (usually {crdgen.CRD_PATH})")
    group.add_argument("--check", metavar="PATH", help="exit 1 when PATH differs from it")
    crd.set_defaults(func=_crd)
    docs = sub.add_parser(
        "docs", help="regenerate the spec-field reference in docs/operator.md and README.md"
    )
    docs.add_argument(
        "--write", metavar="PATH", nargs="*", default=[], help="only these Markdown files"
    )
    docs.set_defaults(func=_docs)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
