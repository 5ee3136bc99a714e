"""``behaviorlm bench``: speed against the naive way and against the machine's limit.

The benchmarks live in the repository's ``benchmarks/`` folder (they compare against code the package never
runs); this verb finds them beside the source tree. Method and formulas: ``docs/PERFORMANCE.md``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from behaviorlm.errors import InputError

SECTIONS = ("machine", "threads", "train", "predict", "formats", "pipeline")


def benchmarks_module(name: str = "suite"):
    """Import ``benchmarks.<name>`` from the source checkout this package was installed from (editable)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__init__.py").is_file():
        raise InputError("the benchmarks need a source checkout (pip install -e .): no benchmarks/ folder",
                         file=str(root))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"benchmarks.{name}")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: about 5-10 minutes on a 2-core CPU with SmolLM2-135M")
    parser.add_argument("--out", help="write the full results as JSON here (each figure with its command)")
    parser.add_argument("--model", default="smollm2-135m",
                        help="model to benchmark: smollm2-135m (embedded), a local folder or a cached hub id; "
                             "'tiny' = a random 2-layer model (tests the machinery in seconds)")
    parser.add_argument("--data", help="a prepared dataset, or a folder of them, for real prompts "
                                       "(default: a small simulator dataset at history length 10 and 20, prepared in "
                                       "a temporary folder)")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                        help=f"run only these sections ({', '.join(SECTIONS)}; repeatable). The machine limit is "
                             "always measured, since the fractions of peak need it")
    parser.add_argument("--pipeline", metavar="RUN", help="print the stage wall times of an existing run folder")
    parser.add_argument("--pipeline-config", metavar="FILE",
                        help="run `behaviorlm run --config FILE` in a child process and measure each stage's wall "
                             "time and peak RSS")
    parser.add_argument("--pipeline-out", metavar="DIR",
                        help="run folder for --pipeline-config (default: a new temporary folder)")
    parser.add_argument("--pipeline-set", dest="pipeline_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="configuration override passed to that run (repeatable)")


def run(args: argparse.Namespace) -> int:
    suite = benchmarks_module("suite")
    sections = tuple(args.only or ("machine", "threads", "train", "predict", "formats"))
    if args.pipeline or args.pipeline_config:
        sections = tuple(dict.fromkeys(sections + ("pipeline",)))
    elif "pipeline" in sections:
        raise InputError("--only pipeline needs --pipeline RUN or --pipeline-config FILE")
    if args.pipeline and not Path(args.pipeline, "manifest.json").is_file():
        raise InputError("not a run folder (no manifest.json)", file=args.pipeline)
    if args.pipeline_config and not Path(args.pipeline_config).is_file():
        raise InputError("config file not found", file=args.pipeline_config)
    options = suite.Options(quick=args.quick, model=args.model, data=args.data, sections=sections,
                            pipeline_run=args.pipeline, pipeline_config=args.pipeline_config,
                            pipeline_out=args.pipeline_out, pipeline_overrides=args.pipeline_overrides)
    report = suite.run_suite(options)
    if args.out:
        from behaviorlm.data.types import write_json_atomic

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(report, out)
    print(suite.format_table(report))
    problems = suite.failures(report)
    for problem in problems:
        print(f"behaviorlm bench: {problem}", file=sys.stderr)
    return 1 if problems else 0
