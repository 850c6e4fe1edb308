"""training/swap_gates.py: a network run with another's gate, the diagnostic that showed which
part of IB-HFN declines with training (docs/EVALUATION.md)."""
import copy

import pytest
import torch

from sar_cloud_removal.models.registry import build
from sar_cloud_removal.training.swap_gates import WithGateOf

from small_networks import SMALL_CONFIGS

CONFIG = dict(SMALL_CONFIGS["ibhfn"], mask_optical=True, detached_gates=True, output_shut=0.3)


def _network(seed):
    torch.manual_seed(seed)
    return build("ibhfn", **CONFIG).eval()


def test_the_body_follows_the_borrowed_gate_and_its_own_gate_changes_nothing():
    generator = torch.Generator().manual_seed(0)
    s2, s1 = torch.rand(2, 13, 32, 32, generator=generator), torch.rand(2, 2, 32, 32,
                                                                         generator=generator)
    body, donor = _network(1), _network(2)
    with torch.no_grad():
        own, theirs = body(s2, s1), donor(s2, s1)
        same = WithGateOf(copy.deepcopy(body), copy.deepcopy(body))(s2, s1)
        mixed = WithGateOf(copy.deepcopy(body), copy.deepcopy(donor))(s2, s1)
    assert torch.equal(same.restored, own.restored) and torch.equal(same.gate, own.gate)
    assert torch.equal(mixed.gate, theirs.gate)
    assert not torch.allclose(mixed.restored, own.restored)        # the borrowed gate blends
    assert not torch.allclose(mixed.restored, theirs.restored)     # with this body's features


def test_a_network_without_a_gate_is_refused():
    with pytest.raises(ValueError, match="no gate module"):
        WithGateOf(build("ibhfn", **dict(SMALL_CONFIGS["ibhfn"], use_gate=False)), _network(2))
