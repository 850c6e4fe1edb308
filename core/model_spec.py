"""The model spec: what a model file promises the engine, and finding model files by name.

Every model file (ONNX or a torch checkpoint) carries a small JSON spec (docs/ARCHITECTURE.md,
"Model contract"). The engine trusts nothing else about a model: tiling, band order and scaling
all come from the spec, so a model trained on other bands or another scale is refused here, in one
sentence, before any pixel is read. Reading an ONNX spec needs neither onnx nor onnxruntime, and
torch is imported only for a .pt file: resolving a name or validating a spec costs no heavy import.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import UserError
from .keep_clear import KEEP_FULL, KEEP_NONE
from .onnx_metadata import NotOnnx, read_metadata
from .runtime_packages import require_package

SPEC_KEY = "sar_cloud_removal"
SPEC_FORMAT = 1
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S1_BANDS = ("VV", "VH")
INPUT_ROLES = ("s2", "s1")
OUTPUT_ROLES = ("restored", "gate")
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "models" / "weights"
DEFAULT_MODEL = "ibhfn"
MODEL_SUFFIXES = (".onnx", ".pt")

_REQUIRED_KEYS = ("format", "name", "version", "architecture", "s2_bands", "s1_bands", "s2_scale",
                  "s1_db_range", "tile_size", "overlap", "size_multiple", "inputs", "outputs",
                  "config")
_FIX_HINT = "use a model made by the `train` and `export` commands of SAR Cloud Removal"


def make_spec(name: str, version: str, architecture: str, config: dict, tile_size: int = 256,
              overlap: int = 32, size_multiple: int = 8, keep_clear=None) -> dict:
    """The spec of a model trained on the SEN12MS-CR conventions, as stored in its files.

    `keep_clear` is (none, full): the gate levels at which the engine starts and ends keeping
    the input pixel (core.keep_clear); None leaves them out, and the engine's defaults apply.
    """
    spec = {
        "format": SPEC_FORMAT, "name": name, "version": version, "architecture": architecture,
        "s2_bands": list(S2_BANDS), "s1_bands": list(S1_BANDS),
        "s2_scale": 10000, "s1_db_range": [-25, 0],
        "tile_size": tile_size, "overlap": overlap, "size_multiple": size_multiple,
        "inputs": {role: role for role in INPUT_ROLES},
        "outputs": {role: role for role in OUTPUT_ROLES},
        "config": dict(config),
    }
    if keep_clear is not None:
        spec["keep_clear"] = {"none": float(keep_clear[0]), "full": float(keep_clear[1])}
    return spec


@dataclass(frozen=True)
class ModelSpec:
    """A validated spec; `raw` is the JSON object as stored, for re-saving it unchanged."""
    name: str
    version: str
    architecture: str
    tile_size: int
    overlap: int
    size_multiple: int
    s2_bands: tuple
    s1_bands: tuple
    s2_scale: float
    s1_db_range: tuple
    config: dict
    inputs: dict    # role ("s2", "s1") -> tensor name in the model
    outputs: dict   # role ("restored", "gate") -> tensor name in the model
    raw: dict
    # Keep-clear levels of this model's gate (core.keep_clear): a gate is a detector whose
    # confidence scale is its own, so the level at which its "clear" is trusted is too.
    keep_none: float = KEEP_NONE
    keep_full: float = KEEP_FULL


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same_sequence(value, expected: tuple) -> bool:
    return isinstance(value, (list, tuple)) and tuple(value) == expected


def _check_names(raw: dict, key: str, roles: tuple, source: str) -> dict:
    names = raw[key]
    if (not isinstance(names, dict) or set(names) != set(roles)
            or not all(isinstance(v, str) and v for v in names.values())):
        raise UserError(f"The model spec in {source} must map '{key}' {' and '.join(roles)} "
                        f"to tensor names; {_FIX_HINT}.")
    return dict(names)


def validate_spec(raw: dict, source: str) -> ModelSpec:
    """Check a stored spec against what this engine can feed, and return it typed.

    `source` names the file in the error messages, since the user has to fix that file.
    """
    if not isinstance(raw, dict):
        raise UserError(f"The model spec in {source} is not a JSON object; {_FIX_HINT}.")
    if "format" in raw and raw["format"] != SPEC_FORMAT:
        newer = _is_int(raw["format"]) and raw["format"] > SPEC_FORMAT
        raise UserError(
            f"The model spec in {source} has format {raw['format']!r} but this plugin reads "
            f"format {SPEC_FORMAT}; "
            + ("update SAR Cloud Removal to use it." if newer else f"{_FIX_HINT}."))
    missing = [key for key in _REQUIRED_KEYS if key not in raw]
    if missing:
        raise UserError(f"The model spec in {source} lacks {', '.join(map(repr, missing))}; "
                        f"{_FIX_HINT}.")
    for key in ("name", "version", "architecture"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise UserError(f"The model spec in {source} needs a non-empty text '{key}'; "
                            f"{_FIX_HINT}.")
    if not _same_sequence(raw["s2_bands"], S2_BANDS) \
            or not _same_sequence(raw["s1_bands"], S1_BANDS):
        raise UserError(
            f"The model in {source} expects bands {raw['s2_bands']} + {raw['s1_bands']} but the "
            f"engine feeds the 13 Sentinel-2 L1C bands + VV, VH; use a model trained on those.")
    if not _is_number(raw["s2_scale"]) or raw["s2_scale"] <= 0:
        raise UserError(f"The model spec in {source} needs a positive 's2_scale'; {_FIX_HINT}.")
    db_range = raw["s1_db_range"]
    if (not isinstance(db_range, (list, tuple)) or len(db_range) != 2
            or not all(map(_is_number, db_range)) or db_range[0] >= db_range[1]):
        raise UserError(f"The model spec in {source} needs 's1_db_range' as [low, high] dB with "
                        f"low < high; {_FIX_HINT}.")
    tile, overlap, multiple = raw["tile_size"], raw["overlap"], raw["size_multiple"]
    if not (_is_int(tile) and _is_int(overlap) and _is_int(multiple)
            and tile > 0 and multiple > 0 and overlap >= 0):
        raise UserError(f"The model spec in {source} needs positive whole 'tile_size' and "
                        f"'size_multiple' and a whole 'overlap' >= 0; {_FIX_HINT}.")
    if tile % multiple:
        raise UserError(f"The model spec in {source} has tile_size {tile}, which is not a "
                        f"multiple of its size_multiple {multiple}; {_FIX_HINT}.")
    if 2 * overlap >= tile:
        raise UserError(f"The model spec in {source} has overlap {overlap}, which must be less "
                        f"than half its tile_size {tile}; {_FIX_HINT}.")
    if not isinstance(raw["config"], dict):
        raise UserError(f"The model spec in {source} needs 'config' as a JSON object; "
                        f"{_FIX_HINT}.")
    keep_none, keep_full = _keep_levels(raw, source)
    return ModelSpec(
        name=raw["name"], version=raw["version"], architecture=raw["architecture"],
        tile_size=tile, overlap=overlap, size_multiple=multiple,
        s2_bands=tuple(raw["s2_bands"]), s1_bands=tuple(raw["s1_bands"]),
        s2_scale=raw["s2_scale"], s1_db_range=tuple(db_range), config=dict(raw["config"]),
        inputs=_check_names(raw, "inputs", INPUT_ROLES, source),
        outputs=_check_names(raw, "outputs", OUTPUT_ROLES, source),
        raw=raw, keep_none=keep_none, keep_full=keep_full)


def _keep_levels(raw: dict, source: str) -> tuple:
    """(none, full) from the optional 'keep_clear' entry; the engine's defaults without one."""
    if "keep_clear" not in raw:
        return KEEP_NONE, KEEP_FULL
    levels = raw["keep_clear"]
    if not (isinstance(levels, dict) and set(levels) == {"none", "full"}
            and all(map(_is_number, levels.values()))
            and 0.0 < levels["none"] < levels["full"] <= 1.0):
        raise UserError(f"The model spec in {source} needs 'keep_clear' as {{\"none\": a, "
                        f"\"full\": b}} with 0 < a < b <= 1; {_FIX_HINT}.")
    return float(levels["none"]), float(levels["full"])


@dataclass
class ModelFiles:
    """The file(s) of one model: an ONNX graph, a torch checkpoint, or both (same spec)."""
    name: str
    onnx_path: Optional[Path]
    torch_path: Optional[Path]

    @property
    def paths(self) -> list:
        return [p for p in (self.onnx_path, self.torch_path) if p is not None]


def list_models() -> list:
    """Registered model names: the stems of the model files shipped in WEIGHTS_DIR."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted({p.stem for p in WEIGHTS_DIR.iterdir()
                   if p.suffix in MODEL_SUFFIXES and p.is_file()})


HEADLINE_PREFIX = "Headline:"


def card_headline(card: Path) -> str:
    """The text after `Headline:` on a model card's first such line, or why there is none.

    The card (models/weights/<name>.md, beside the model files) states and cites the figures;
    `sar-cloud-removal models` and the dock's model list show this line, so what a user reads
    when choosing a model is what its card says.
    """
    card = Path(card)
    if not card.is_file():
        return "no model card"
    for line in card.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith(HEADLINE_PREFIX):
            return line.strip()[len(HEADLINE_PREFIX):].strip()
    return f"no headline in {card.name}"


def _files_beside(path: Path) -> ModelFiles:
    """The model at `path` plus its sibling with the other suffix, when there is one."""
    onnx_path, torch_path = path.with_suffix(".onnx"), path.with_suffix(".pt")
    return ModelFiles(name=path.stem,
                      onnx_path=onnx_path if onnx_path.is_file() else None,
                      torch_path=torch_path if torch_path.is_file() else None)


def resolve_model(name_or_path) -> ModelFiles:
    """Find the files of a registered model name, `default`, or a path to a .onnx / .pt file."""
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if path.suffix.lower() in MODEL_SUFFIXES:
        if not path.is_file():
            raise UserError(f"The model file {path} does not exist; give the path of an "
                            f"existing .onnx or .pt file or a registered model name.")
        return _files_beside(path.resolve())
    if path.is_file():
        raise UserError(f"{path} is not a model file; give a .onnx or .pt file or a registered "
                        f"model name.")
    name = DEFAULT_MODEL if text == "default" else text
    available = list_models()
    if name not in available:
        choices = ", ".join(available) if available else f"none are installed in {WEIGHTS_DIR}"
        raise UserError(f"Unknown model '{text}'; give a path to a .onnx or .pt file or one of "
                        f"the registered models ({choices}).")
    return _files_beside(WEIGHTS_DIR / f"{name}.onnx")


def _spec_from_onnx(path: Path) -> dict:
    try:
        stored = read_metadata(path)
    except NotOnnx as exc:
        raise UserError(f"The model file {path} is not a readable ONNX model (truncated or "
                        f"corrupt); replace it with a complete copy.") from exc
    if SPEC_KEY not in stored:
        raise UserError(f"The ONNX file {path} carries no SAR Cloud Removal spec (it is "
                        f"truncated or was not made by `sar-cloud-removal export`); "
                        f"{_FIX_HINT}.")
    try:
        return json.loads(stored[SPEC_KEY])
    except ValueError as exc:
        raise UserError(f"The spec in {path} is not valid JSON; {_FIX_HINT}.") from exc


def read_checkpoint(path: Path) -> dict:
    """Load a torch checkpoint without executing code from it.

    `weights_only=True` restricts unpickling to tensors and plain data, so a model file from the
    internet cannot run arbitrary code on the analyst's machine; a checkpoint that needs more is
    refused rather than trusted.
    """
    import pickle

    torch = require_package("torch")
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"The model file {path} holds more than tensors and plain data and is "
                        f"refused for safety; re-save it as {{'spec': ..., 'state_dict': ...}}.") \
            from exc
    except Exception as exc:  # torch.load raises many kinds on a foreign or truncated file
        raise UserError(f"The model file {path} is not a readable torch checkpoint (truncated or "
                        f"corrupt); replace it with a complete copy.") from exc
    if not isinstance(checkpoint, dict) or "spec" not in checkpoint \
            or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"The torch file {path} is not a SAR Cloud Removal checkpoint (it needs "
                        f"'spec' and 'state_dict'); save it with the training tools.")
    return checkpoint


def _canonical(raw) -> str:
    """Specs are equal when they serialise alike (a .pt may hold tuples where JSON has lists)."""
    return json.dumps(raw, sort_keys=True)


def load_spec(files: ModelFiles) -> ModelSpec:
    """Read and validate the spec of a model, from its ONNX file when it has one.

    The ONNX spec is read without onnx, onnxruntime or torch and without the weights; a sibling
    .pt is checked against it only when the torch backend opens it (`check_same_spec`), so an
    ONNX run does not pay for importing torch.
    """
    if files.onnx_path is not None:
        return validate_spec(_spec_from_onnx(files.onnx_path), str(files.onnx_path))
    if files.torch_path is not None:
        return validate_spec(read_checkpoint(files.torch_path)["spec"], str(files.torch_path))
    raise UserError(f"The model '{files.name}' has no .onnx or .pt file; reinstall it.")


def check_same_spec(spec: ModelSpec, raw, path) -> None:
    """A checkpoint must carry the spec the run was planned with (its ONNX sibling's)."""
    if _canonical(spec.raw) != _canonical(raw):
        raise UserError(f"{path} carries a different model spec from its ONNX file; re-export "
                        f"the ONNX file from the checkpoint with `sar-cloud-removal export`.")
