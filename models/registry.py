"""The networks the tools can build by name, so a model file's spec (architecture + config) is
enough to rebuild it, and training, evaluation and export need no per-network code."""
import inspect

from torch import nn

from ..core.errors import UserError
from .dsen2cr import DSen2CR
from .ensemble import Ensemble
from .ibhfn import IBHFN
from .identity import IdentityNetwork
from .mmcanet import MMCANet
from .network_io import NetworkOutput
from .sgbafm import SGBAFMNet

__all__ = ["ARCHITECTURES", "NetworkOutput", "build", "resolved_config"]

ARCHITECTURES = {
    "ibhfn": IBHFN,
    "dsen2cr": DSen2CR,
    "mmcanet": MMCANet,
    "sgbafm": SGBAFMNet,
    "identity": IdentityNetwork,
    "ensemble": Ensemble,
}


def _network_class(architecture: str) -> type:
    if architecture not in ARCHITECTURES:
        raise UserError(f"Unknown network architecture '{architecture}'; use one of "
                        f"{', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[architecture]


def build(architecture: str, **config) -> nn.Module:
    """A freshly initialised network; every network has a `size_multiple` attribute and
    `forward(s2, s1) -> NetworkOutput`.

    Raises UserError for an unknown architecture or config, since both come from a model file or
    a training config the user supplied.
    """
    network_class = _network_class(architecture)
    try:
        return network_class(**config)
    except (TypeError, ValueError) as exc:
        raise UserError(f"The {architecture} configuration {config} is invalid ({exc}); fix the "
                        f"model spec or training config.") from exc


def resolved_config(architecture: str, config: dict) -> dict:
    """`config` completed with the network's defaults, to store in a model spec.

    A spec that names every setting keeps rebuilding the same network even if a default changes
    in a later release.
    """
    parameters = {name: p for name, p in
                  inspect.signature(_network_class(architecture)).parameters.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(config) - set(parameters))
    if unknown:
        raise UserError(f"The {architecture} network has no setting {', '.join(unknown)}; use "
                        f"{', '.join(parameters) or 'none'}.")
    return {name: config.get(name, p.default) for name, p in parameters.items()}


def load_weights(network: nn.Module, state_dict: dict, source, architecture: str,
                 fresh=()) -> None:
    """Load strictly, explaining a mismatch in one sentence instead of torch's key listing.

    `fresh` names parameter prefixes that keep the network's own initialisation whatever the
    checkpoint holds: modules added, re-purposed or removed when a network is grown from an
    older one (training's `init_fresh`); the checkpoint's tensors under them are dropped.
    Nothing else may be missing or left over.
    """
    expected = network.state_dict()
    if fresh:
        fresh = tuple(fresh)
        kept = {key: tensor for key, tensor in expected.items() if key.startswith(fresh)}
        state_dict = {**{k: v for k, v in state_dict.items() if not k.startswith(fresh)}, **kept}
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    reshaped = [key for key, tensor in state_dict.items() if key in expected
                and tuple(getattr(tensor, "shape", ())) != tuple(expected[key].shape)]
    if missing or unexpected or reshaped:
        raise UserError(
            f"The weights in {source} do not fit the {architecture} network its spec describes "
            f"({len(missing)} tensors missing, {len(unexpected)} unexpected, {len(reshaped)} of "
            f"another shape, e.g. '{(missing + unexpected + reshaped)[0]}'); use a checkpoint "
            f"saved with this spec.")
    network.load_state_dict(state_dict, strict=True)
