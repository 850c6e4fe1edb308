"""Saving networks as the model files the engine reads, and the `export` command.

A model file is only usable when it carries a spec (docs/ARCHITECTURE.md, "Model contract"), so
every writer goes through here: `save_checkpoint` for torch, `export_onnx` for ONNX. Both check
the spec first and write atomically (a temporary file renamed into place), so an interrupted run
never leaves a half-written model where the engine would find it.

The CLI imports this module to list every command's options, so torch, onnx and the networks
are imported inside the functions that use them.
"""
import io
import json
import os
from pathlib import Path

from ..core.errors import UserError
from ..core.model_spec import SPEC_KEY, make_spec, read_checkpoint, validate_spec

ONNX_OPSET = 17
# The trace runs on a small dummy batch: ONNX graphs are traced, and the axes named here stay free.
_DYNAMIC_AXES = {"batch": 0, "height": 2, "width": 3}
_TRACE_BATCH = 2


def _write_atomically(path: Path, write) -> None:
    """Call write(temporary_path), then rename the result onto `path`."""
    path = Path(path)
    # A plain name rather than tempfile.mkstemp, whose 0600 mode would make shipped models
    # unreadable to other users.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(str(temporary))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _checked_spec(model, spec: dict, path) -> dict:
    validate_spec(spec, str(path))
    multiple = getattr(model, "size_multiple", 1)
    if spec["size_multiple"] % multiple:
        raise UserError(f"The spec for {path} gives size_multiple {spec['size_multiple']} but the "
                        f"{spec['architecture']} network needs multiples of {multiple}.")
    return spec


def save_checkpoint(model, spec: dict, path, extra: dict = None) -> None:
    """Write {"spec", "state_dict"} (+ `extra`, e.g. optimizer state for resuming) to `path`.

    The engine's torch backend loads exactly this, rebuilding the network from the spec.
    """
    import torch

    checkpoint = dict(extra or {}, spec=_checked_spec(model, spec, path),
                      state_dict=model.state_dict())
    _write_atomically(Path(path), lambda temporary: torch.save(checkpoint, temporary))


def export_onnx(model, spec: dict, path) -> None:
    """Trace `model` in eval mode into an ONNX graph with inputs `s2`, `s1`, outputs `restored`,
    `gate` (batch, height and width free) and the spec in its metadata, checked by onnx.checker.
    """
    import onnx
    import torch

    from .network_io import EngineOutputs

    _checked_spec(model, spec, path)
    wrapper = EngineOutputs(model)
    was_training = model.training
    wrapper.eval()
    # at least 32 px and a valid size, so the deepest level of any network still has pixels
    side = spec["size_multiple"] * max(1, 32 // spec["size_multiple"])
    dummy = (torch.rand(_TRACE_BATCH, len(spec["s2_bands"]), side, side),
             torch.rand(_TRACE_BATCH, len(spec["s1_bands"]), side, side))
    buffer = io.BytesIO()
    try:
        torch.onnx.export(
            wrapper, dummy, buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=list(spec["inputs"].values()), output_names=list(spec["outputs"].values()),
            dynamic_axes={name: {axis: label for label, axis in _DYNAMIC_AXES.items()}
                          for name in [*spec["inputs"].values(), *spec["outputs"].values()]})
    finally:
        model.train(was_training)
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(graph, {SPEC_KEY: json.dumps(spec)})
    onnx.checker.check_model(graph, full_check=True)
    _write_atomically(Path(path), lambda temporary: onnx.save(graph, temporary))


def load_network(path, settings: dict = None) -> tuple:
    """(network in eval mode, spec dict) from a checkpoint written by `save_checkpoint`.

    `settings` override architecture settings of the checkpoint's spec that change no weight
    (e.g. IB-HFN's `output_shut`); the weights must still fit exactly, and the returned spec
    carries the new settings.
    """
    from .registry import build, load_weights, resolved_config

    checkpoint = read_checkpoint(Path(path))
    spec = validate_spec(checkpoint["spec"], str(path))
    raw = spec.raw
    if settings:
        config = resolved_config(spec.architecture, {**spec.config, **settings})
        raw = {**raw, "config": config}
        spec = validate_spec(raw, str(path))
    network = build(spec.architecture, **spec.config)
    load_weights(network, checkpoint["state_dict"], path, spec.architecture)
    return network.eval(), raw


def load_ensemble(paths, settings: dict = None):
    """The checkpoints at `paths` as one Ensemble (models/ensemble.py) and the raw spec its files
    should start from: the first member's, with architecture "ensemble", each member's
    architecture and config, and a size multiple that fits them all; tiling and keep-clear
    levels are the first's (the export command can override both). `settings` apply to every
    member, as in `load_network`. The members must agree on the data conventions, since they
    read the same tensors."""
    from .ensemble import Ensemble

    loaded = [load_network(path, settings) for path in paths]
    first = loaded[0][1]
    for path, (_, raw) in zip(paths[1:], loaded[1:]):
        for key in ("s2_bands", "s1_bands", "s2_scale", "s1_db_range"):
            if raw[key] != first[key]:
                raise UserError(f"The checkpoints {paths[0]} and {path} differ in {key} "
                                f"({first[key]} against {raw[key]}); an ensemble's members read the "
                                f"same inputs, so give checkpoints that agree.")
    members = [{"architecture": raw["architecture"], "config": raw["config"]}
               for _, raw in loaded]
    network = Ensemble(members)
    for slot, (member, _) in zip(network.members, loaded):
        slot.load_state_dict(member.state_dict(), strict=True)
    raw = {**first, "architecture": "ensemble", "config": {"members": members},
           "size_multiple": network.size_multiple}
    return network.eval(), raw


def initial_network(architecture: str, config: dict = None, seed: int = 0):
    """A freshly initialised network, reproducible from `seed` (for shipping untrained defaults
    and for tests)."""
    import torch

    from .registry import build

    torch.manual_seed(seed)
    return build(architecture, **(config or {}))


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT.pt", nargs="+",
                        help="a checkpoint written by `sar-cloud-removal train`; several make "
                             "one ensemble network that averages their restorations and gates "
                             "(name, version, tiling and keep-clear levels default to the "
                             "first's)")
    source.add_argument("--untrained", metavar="ARCHITECTURE",
                        help="export a freshly initialised (seeded) network of a registered "
                             "architecture instead, e.g. ibhfn")
    parser.add_argument("--config", metavar="JSON",
                        help="architecture settings for --untrained, e.g. '{\"width\": 24}'; "
                             "with --checkpoint, settings that change no weight, e.g. "
                             "'{\"output_shut\": 0.3}'")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed for --untrained")
    parser.add_argument("--out", required=True, metavar="MODEL.onnx",
                        help="the ONNX file to write; a torch checkpoint with the same spec is "
                             "written beside it as MODEL.pt unless --onnx-only")
    parser.add_argument("--onnx-only", action="store_true",
                        help="do not write the MODEL.pt beside the ONNX file")
    parser.add_argument("--name", help="model name in the spec (default: the checkpoint's, or the "
                                       "output file name)")
    parser.add_argument("--version", help="model version in the spec (default: the checkpoint's, "
                                          "or 0.1.0-untrained)")
    parser.add_argument("--tile-size", type=int, help="engine tile size (default: the "
                                                      "checkpoint's, or 256)")
    parser.add_argument("--overlap", type=int, help="engine tile overlap (default: the "
                                                    "checkpoint's, or 32)")
    parser.add_argument("--keep-clear", metavar="NONE,FULL",
                        help="gate levels at which the engine starts and ends keeping the input "
                             "pixel, e.g. 0.65,0.75 (default: the checkpoint's, or the engine's "
                             "0.8,0.9)")


def _parse_keep_clear(text: str) -> tuple:
    try:
        none, full = (float(v) for v in text.split(","))
    except ValueError:
        none = full = None
    if none is None or not 0.0 < none < full <= 1.0:
        raise UserError(f"--keep-clear must be two gate levels NONE,FULL with 0 < NONE < FULL "
                        f"<= 1, such as 0.65,0.75, not {text!r}.")
    return none, full


def _parse_config(text: str) -> dict:
    try:
        config = json.loads(text)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise UserError(f"--config must be a JSON object such as '{{\"width\": 24}}', "
                        f"not {text!r}.")
    return config


def _keep_clear_of(args, stored: dict):
    """--keep-clear, else the stored spec's levels, else None (the engine's defaults)."""
    if args.keep_clear:
        return _parse_keep_clear(args.keep_clear)
    stored_levels = stored.get("keep_clear")
    return None if stored_levels is None else (stored_levels["none"], stored_levels["full"])


def run(args) -> int:
    from .registry import resolved_config

    out = Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"The output {out} must end in .onnx.")
    if not out.parent.is_dir():
        raise UserError(f"The output folder {out.parent} does not exist; create it first.")
    if args.checkpoint:
        for path in args.checkpoint:
            if not Path(path).is_file():
                raise UserError(f"The checkpoint {path} does not exist.")
        settings = _parse_config(args.config or "{}")
        if len(args.checkpoint) == 1:
            network, stored = load_network(args.checkpoint[0], settings)
        else:
            network, stored = load_ensemble(args.checkpoint, settings)
    else:
        config = resolved_config(args.untrained, _parse_config(args.config or "{}"))
        network = initial_network(args.untrained, config, args.seed).eval()
        stored = make_spec(out.stem, "0.1.0-untrained", args.untrained, config,
                           size_multiple=network.size_multiple)
    spec = make_spec(args.name or stored["name"], args.version or stored["version"],
                     stored["architecture"], stored["config"],
                     tile_size=stored["tile_size"] if args.tile_size is None else args.tile_size,
                     overlap=stored["overlap"] if args.overlap is None else args.overlap,
                     size_multiple=stored["size_multiple"],
                     keep_clear=_keep_clear_of(args, stored))
    export_onnx(network, spec, out)
    written = [out]
    if not args.onnx_only:
        save_checkpoint(network, spec, out.with_suffix(".pt"))
        written.append(out.with_suffix(".pt"))
    print(f"Wrote {' and '.join(map(str, written))} (model '{spec['name']}' "
          f"{spec['version']}, {spec['architecture']}).")
    return 0
