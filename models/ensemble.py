"""Several trained networks run as one: their restorations and gates averaged.

Averaging the outputs of independently trained networks cancels the errors they do not share;
averaging their weights instead fails (runs from different initialisations share no basin, and
even from one initialisation the averaged net blurs its gate). On our six real triplets two
seeds of 4.0.0's recipe share most of their errors, and their average scores no better than the
better one (docs/EVALUATION.md, "Two seeds averaged"), so the default stays one network; members
trained on more data may differ more usefully.

An ensemble is an ordinary registry network (architecture "ensemble", config
{"members": [{"architecture", "config"}, ...]}), so a spec still rebuilds it, its state dict is
the members' under `members.<i>.`, and training, export, the engine and the ONNX graph need no
code of their own for it. Its cost is the sum of its members'.
"""
import math

import torch
from torch import nn

from .network_io import NetworkOutput


class Ensemble(nn.Module):
    def __init__(self, members: list = ()):
        super().__init__()
        from .registry import build

        if not members:
            raise ValueError("an ensemble needs at least one member network")
        for member in members:
            if not isinstance(member, dict) or set(member) != {"architecture", "config"}:
                raise ValueError("each member is {'architecture': name, 'config': {...}}")
            if member["architecture"] == "ensemble":
                raise ValueError("an ensemble's members cannot be ensembles")
        self.members = nn.ModuleList(build(m["architecture"], **m["config"]) for m in members)
        self.size_multiple = math.lcm(*(m.size_multiple for m in self.members))

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> NetworkOutput:
        outputs = [member(s2, s1) for member in self.members]
        count = float(len(outputs))
        reconstructions = [o.reconstruction for o in outputs]
        return NetworkOutput(
            restored=sum(o.restored for o in outputs) / count,
            gate=sum(o.gate for o in outputs) / count,
            kl=sum(o.kl for o in outputs) / count,
            reconstruction=(None if any(r is None for r in reconstructions)
                            else sum(reconstructions) / count))
