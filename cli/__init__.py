"""The CLI face: the `sar-cloud-removal` console command (also `python -m sar_cloud_removal.cli`).

One module per subcommand, each exposing `add_arguments(parser)` and `run(args) -> int`: the
CLI's own commands live in this package (`remove`, `batch`, `bench`, `models`; `demo` and `quicklook` are
its helpers), while `evaluate`, `train` and `export` are the training and model tools' own
modules. This module only dispatches, so heavy imports happen for the command in use only, and
every command reports errors the same way: one sentence on stderr, no traceback.
"""
import argparse
import importlib
import importlib.util
import sys

from ..core.errors import Cancelled, UserError

# subcommand -> (module relative to this package, one-line help)
COMMANDS = {
    "remove": (".remove", "remove clouds from an S2 image using a co-registered S1 image"),
    "batch": (".batch", "remove clouds from many scenes at once on a Dask cluster"),
    "evaluate": ("..training.evaluate", "score a model on a folder of S1/S2 triplets"),
    "train": ("..training.train", "train or fine-tune a network from a config file"),
    "export": ("..models.export", "export a trained checkpoint to ONNX with engine metadata"),
    "bench": (".bench", "measure throughput and peak memory on generated scenes"),
    "models": (".models", "list the installed models with their cards' headline figures"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sar-cloud-removal",
        description="Remove clouds from Sentinel-2 images with Sentinel-1 SAR (IB-HFN).")
    parser.add_argument("--debug", action="store_true",
                        help="show a full traceback for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name, __package__)
        except ModuleNotFoundError as exc:
            # An install without the training tools (or this package's optional parts) still
            # offers the other commands.
            missing = exc.name or ""
            wanted = importlib.util.resolve_name(module_name, __package__)
            if not (wanted == missing or wanted.startswith(missing + ".")):
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except Cancelled as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted; no output was written.", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug asks for the trace
        if args.debug:
            raise
        print(f"\ninternal error: {type(exc).__name__}: {exc} "
              "(rerun with --debug for the traceback and report it)", file=sys.stderr)
        return 1

