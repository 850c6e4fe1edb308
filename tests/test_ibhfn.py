"""The networks of the model registry: the output contract, and each part of IB-HFN doing what
SPEC §5 says (bottleneck, gate, Dirac skip) and disappearing when its ablation switch is off."""
import pytest
import torch

from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.models.ibhfn import GATE_OPEN, GATE_SHUT, IBHFN, blend_weight
from sar_cloud_removal.models.losses import JointLoss
from sar_cloud_removal.models.registry import ARCHITECTURES, build, resolved_config

from small_networks import SMALL_CONFIGS

SMALL = SMALL_CONFIGS["ibhfn"]


def inputs(batch=2, height=16, width=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 13, height, width, generator=generator),
            torch.rand(batch, 2, height, width, generator=generator))


def open_gate(network: IBHFN) -> None:
    """Force g = 1 everywhere: both gate branches output a constant logit far in saturation."""
    with torch.no_grad():
        for last in (network.gate.local[-1], network.gate.context[-1]):
            last.weight.zero_()
            last.bias.fill_(50.0)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("height, width", [(32, 64), (96, 32)])
def test_every_network_keeps_the_output_contract(architecture, height, width):
    network = build(architecture, **SMALL_CONFIGS[architecture]).eval()
    assert height % network.size_multiple == 0 and width % network.size_multiple == 0
    s2, s1 = inputs(3, height, width)
    with torch.no_grad():
        out = network(s2, s1)
    assert out.restored.shape == (3, 13, height, width)
    assert out.gate.shape == (3, 1, height, width)
    assert out.kl.shape == ()
    assert 0.0 <= out.gate.min() and out.gate.max() <= 1.0
    assert torch.isfinite(out.restored).all()


def test_size_multiple_follows_the_downsamplings():
    assert build("ibhfn", **dict(SMALL, downsamplings=2)).size_multiple == 4
    assert build("ibhfn", **dict(SMALL, downsamplings=3)).size_multiple == 8


def test_identity_network_returns_its_input_exactly():
    s2, s1 = inputs()
    out = build("identity")(s2, s1)
    assert torch.equal(out.restored, s2)
    assert torch.equal(out.gate, torch.ones(2, 1, 16, 24))
    assert out.kl.item() == 0.0


def test_dsen2cr_has_a_long_skip_and_no_gate_without_its_mask_head():
    network = build("dsen2cr", width=8, blocks=2, mask_head=False)
    with torch.no_grad():
        network.correction.weight.zero_()
        network.correction.bias.zero_()
    s2, s1 = inputs()
    out = network(s2, s1)
    assert torch.equal(out.restored, s2)          # zero correction: the cloudy input itself
    assert torch.equal(out.gate, torch.ones(2, 1, 16, 24))


def test_unknown_architecture_and_setting_are_refused_in_one_sentence():
    with pytest.raises(UserError, match="Unknown network architecture 'unet'"):
        build("unet")
    with pytest.raises(UserError, match="invalid"):
        build("ibhfn", widht=8)
    with pytest.raises(UserError, match="no setting widht"):
        resolved_config("ibhfn", {"widht": 8})


def test_resolved_config_names_every_setting_and_rebuilds_the_same_network():
    config = resolved_config("ibhfn", {"width": 4})
    assert config["width"] == 4 and set(config) >= {"sar_width", "depth", "downsamplings",
                                                     "use_bottleneck", "use_gate", "dirac_skip"}
    torch.manual_seed(1)
    a = build("ibhfn", width=4)
    torch.manual_seed(1)
    b = build("ibhfn", **config)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_bottleneck_samples_in_training_and_uses_the_mean_in_eval():
    torch.manual_seed(0)
    network = build("ibhfn", **SMALL)
    s2, s1 = inputs()
    first, second = network(s2, s1), network(s2, s1)
    assert first.kl.item() > 0.0
    assert not torch.equal(first.restored, second.restored)     # z = μ + σ·ε differs per call
    network.eval()
    with torch.no_grad():
        first, second = network(s2, s1), network(s2, s1)
    assert torch.equal(first.restored, second.restored)         # z = μ


def test_kl_is_that_of_the_predicted_gaussians():
    fusion = build("ibhfn", **SMALL).fusions[0]
    optical, sar = torch.rand(1, 8, 4, 4), torch.rand(1, 4, 4, 4)
    mu, logvar = fusion.mu(sar), fusion.logvar(sar)
    expected = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).mean()
    assert torch.allclose(fusion(optical, sar)[1], expected)


def test_without_bottleneck_there_is_no_sampling_and_no_kl():
    network = build("ibhfn", **SMALL, use_bottleneck=False)
    assert all(fusion.logvar is None for fusion in network.fusions)
    s2, s1 = inputs()
    first, second = network(s2, s1), network(s2, s1)          # training mode
    assert first.kl.item() == 0.0
    assert torch.equal(first.restored, second.restored)


def test_dirac_skip_passes_the_optical_input_through_an_open_gate():
    network = build("ibhfn", **SMALL).eval()
    open_gate(network)
    s2, s1 = inputs()
    with torch.no_grad():
        out = network(s2, s1)
    assert torch.equal(out.gate, torch.ones_like(out.gate))
    assert torch.allclose(out.restored, s2, atol=1e-6)


def test_without_dirac_init_an_open_gate_does_not_pass_the_input_through():
    torch.manual_seed(0)
    network = build("ibhfn", **SMALL, dirac_skip=False).eval()
    open_gate(network)
    s2, s1 = inputs()
    with torch.no_grad():
        out = network(s2, s1)
    assert (out.restored - s2).abs().max() > 0.05


def test_untrained_gate_starts_mostly_open():
    network = build("ibhfn", **SMALL).eval()
    with torch.no_grad():
        gate = network(*inputs()).gate
    assert gate.min() > 0.5


def test_gate_mixes_passthrough_and_reconstruction_by_its_stretched_weight():
    network = build("ibhfn", **SMALL).eval()
    s2, s1 = inputs()
    with torch.no_grad():
        out = network(s2, s1)
        network.gate.local[-1].bias.fill_(-50.0)    # closed gate: reconstruction only
        network.gate.context[-1].bias.fill_(-50.0)
        closed = network(s2, s1)
    weight = blend_weight(out.gate)
    expected = weight * s2 + (1 - weight) * closed.restored
    assert torch.allclose(out.restored, expected, atol=1e-5)
    assert torch.equal(closed.restored, closed.reconstruction)
    assert torch.allclose(out.reconstruction, closed.reconstruction)


def test_a_gate_at_or_below_its_shut_level_passes_nothing_of_the_optical_input():
    """Under opaque cloud the output is the reconstruction alone, exactly: a sigmoid gate never
    reaches 0, so the blend weight is the gate stretched to reach it."""
    gate = torch.tensor([0.0, GATE_SHUT, 0.5, GATE_OPEN, 1.0])
    assert blend_weight(gate).tolist() == [0.0, 0.0, pytest.approx(0.5), 1.0, 1.0]
    network = build("ibhfn", **SMALL).eval()
    with torch.no_grad():
        network.gate.local[-1].weight.zero_()
        network.gate.context[-1].weight.zero_()
        network.gate.local[-1].bias.fill_(-3.0)     # sigmoid(-3) = 0.047 < GATE_SHUT
        network.gate.context[-1].bias.fill_(0.0)
        s2, s1 = inputs()
        out = network(s2, s1)
    assert float(out.gate.max()) < GATE_SHUT
    assert torch.equal(out.restored, out.reconstruction)


def test_without_gate_the_output_is_passthrough_plus_reconstruction_and_the_gate_is_ones():
    network = build("ibhfn", **SMALL, use_gate=False).eval()
    assert network.gate is None
    with torch.no_grad():
        network.reconstruction.weight.zero_()
        network.reconstruction.bias.fill_(0.25)
        s2, s1 = inputs()
        out = network(s2, s1)
    assert torch.allclose(out.restored, s2 + 0.25, atol=1e-6)
    assert torch.equal(out.gate, torch.ones_like(out.gate))


@pytest.mark.parametrize("architecture", sorted(set(ARCHITECTURES) - {"identity"}))
def test_two_training_steps_change_every_trained_part_with_finite_gradients(architecture,
                                                                             real_triplet):
    torch.manual_seed(0)
    network = build(architecture, **SMALL_CONFIGS[architecture])
    s1 = torch.from_numpy(real_triplet.s1[None, :, :32, :32])
    cloudy = torch.from_numpy(real_triplet.cloudy[None, :, :32, :32])
    target = torch.from_numpy(real_triplet.target[None, :, :32, :32])
    clear = torch.ones(1, 32, 32)
    clear[:, :16] = 0.0      # a clear-sky target with both classes: the gate term trains too
    loss = JointLoss()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    for step in (10_000, 10_001):                   # every loss term has its full weight
        total, _ = loss(network(cloudy, s1), target, cloudy, step, clear=clear)
        optimizer.zero_grad()
        total.backward()
        for name, parameter in network.named_parameters():
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        optimizer.step()
    changed = {k for k, v in network.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(before)



def shut_gate(network: IBHFN) -> None:
    """Force g ≈ 0 everywhere (blend weight exactly 0): opaque cloud over the whole tile."""
    with torch.no_grad():
        for last in (network.gate.local[-1], network.gate.context[-1]):
            last.weight.zero_()
            last.bias.fill_(-50.0)


def test_a_shut_gate_leaves_no_trace_of_the_optical_input_in_the_masked_reconstruction():
    """Under opaque cloud the masked network's decoder sees SAR alone: the cloud's own texture
    cannot reach the output. Without the mask the reconstruction does depend on the cloud."""
    s2, s1 = inputs()
    other_s2 = torch.rand_like(s2)
    for mask_optical in (True, False):
        torch.manual_seed(0)
        network = build("ibhfn", **SMALL, mask_optical=mask_optical).eval()
        shut_gate(network)
        with torch.no_grad():
            first, second = network(s2, s1), network(other_s2, s1)
        assert torch.equal(first.restored, first.reconstruction)
        assert torch.equal(first.reconstruction, second.reconstruction) == mask_optical


def test_the_masked_gate_is_computed_from_the_optical_encoder_alone():
    """It decides what the decoder sees, so it cannot depend on the decoder (nor on SAR)."""
    torch.manual_seed(0)
    network = build("ibhfn", **SMALL, mask_optical=True).eval()
    s2, s1 = inputs()
    with torch.no_grad():
        first, second = network(s2, s1), network(s2, torch.rand_like(s1))
    assert torch.equal(first.gate, second.gate)
    assert not torch.equal(first.restored, second.restored)


def test_scene_context_reads_the_clear_pixels_and_ignores_the_cloudy_ones():
    from sar_cloud_removal.models.ibhfn import SceneContext, pooled_weights

    torch.manual_seed(0)
    context = SceneContext(deep_channels=8)
    torch.nn.init.normal_(context.mlp[-1].weight)      # as if trained: no longer all zero
    s2, deep = torch.rand(1, 13, 16, 16), torch.rand(1, 8, 4, 4)
    weight = torch.zeros(1, 1, 16, 16)
    weight[..., :8] = 1.0                              # left half clear, right half cloud
    weights, none = pooled_weights(weight, 3), pooled_weights(torch.zeros_like(weight), 3)
    cloud_changed, clear_changed = s2.clone(), s2.clone()
    cloud_changed[..., 8:] += 0.5
    clear_changed[..., :8] += 0.5
    base = context(s2, weights, deep)
    assert base.shape == (1, 8, 1, 1)
    assert torch.equal(context(cloud_changed, weights, deep), base)
    assert not torch.allclose(context(clear_changed, weights, deep), base)
    # a tile with no clear pixel says so (fraction 0) and reads nothing of the cloud
    assert torch.equal(context(s2, none, deep * 0), context(s2 + 0.5, none, deep * 0))


def test_detached_gates_learn_from_the_mask_term_alone():
    from sar_cloud_removal.models.losses import l1_loss, reconstruction_loss

    s2, s1 = inputs()
    target, clear = torch.rand_like(s2), (torch.rand(2, 16, 24) > 0.5).float()
    for detached in (True, False):
        torch.manual_seed(0)
        network = build("ibhfn", **SMALL, mask_optical=True, scene_context=True,
                        detached_gates=detached)
        out = network(s2, s1)
        (l1_loss(out.restored, target)                                       # no mask term
         + reconstruction_loss(out.reconstruction, target, clear)).backward()
        heads = [p for name, p in network.named_parameters() if name.startswith("gate.")]
        assert all(p.grad is None or not p.grad.any() for p in heads) == detached
    with pytest.raises(UserError, match="needs mask_optical"):
        build("ibhfn", **SMALL, scene_context=True)
    with pytest.raises(UserError, match="need the gate"):
        build("ibhfn", **SMALL, mask_optical=True, use_gate=False)


def test_a_network_grown_from_an_older_checkpoint_keeps_only_the_named_modules_fresh():
    from sar_cloud_removal.models.registry import load_weights

    torch.manual_seed(0)
    old = build("ibhfn", **SMALL).state_dict()
    torch.manual_seed(1)
    grown = build("ibhfn", **SMALL, mask_optical=True, scene_context=True)
    fresh = {k: v.clone() for k, v in grown.state_dict().items()
             if k.startswith(("gate.", "scene_context."))}
    with pytest.raises(UserError, match="tensors missing"):
        load_weights(grown, old, "old.pt", "ibhfn")
    load_weights(grown, old, "old.pt", "ibhfn", fresh=["gate.", "scene_context."])
    state = grown.state_dict()
    assert all(torch.equal(state[k], v) for k, v in old.items() if not k.startswith("gate."))
    assert all(torch.equal(state[k], v) for k, v in fresh.items())
    assert not torch.equal(state["gate.local.0.weight"], old["gate.local.0.weight"])
    without_reconstruction = {k: v for k, v in old.items() if not k.startswith("reconstruction.")}
    with pytest.raises(UserError, match="tensors missing"):
        load_weights(grown, without_reconstruction, "old.pt", "ibhfn", fresh=["scene_context."])


@pytest.mark.parametrize("gate_scales", [False, True])
def test_only_the_multi_scale_gate_is_blind_to_far_away_cloud(gate_scales):
    """The multi-scale gate decides per pixel from its neighbourhood: a bright cloud laid far
    away (beyond every receptive field) leaves the gate of the left edge as it was. The pooled
    gate shifts the whole tile with it: the pixel's gate would depend on its tile."""
    torch.manual_seed(0)
    network = build("ibhfn", **SMALL, mask_optical=True, gate_scales=gate_scales).eval()
    with torch.no_grad():
        for last in [network.gate.local[-1]] + [branch[-1] for branch in
                                               getattr(network.gate, "scales", [])]:
            torch.nn.init.normal_(last.weight, std=1.0)
        if not gate_scales:
            torch.nn.init.normal_(network.gate.context[-1].weight, std=1.0)
    s2, s1 = inputs(batch=1, height=16, width=512)
    clouded = s2.clone()
    clouded[..., 384:] = 1.0
    with torch.no_grad():
        before, after = network(s2, s1).gate, network(clouded, s1).gate
    assert not torch.equal(before[..., 384:], after[..., 384:])
    assert torch.equal(before[..., :128], after[..., :128]) == gate_scales


def test_a_multi_scale_gate_grown_from_a_pooled_one_starts_from_its_local_branch():
    """Growing 3.2.0 into a multi-scale gate: the checkpoint's pooled context is dropped (a
    fresh prefix), the local branch is kept and the level branches start silent."""
    from sar_cloud_removal.models.registry import load_weights

    torch.manual_seed(0)
    pooled = build("ibhfn", **SMALL, mask_optical=True).eval()
    grown = build("ibhfn", **SMALL, mask_optical=True, gate_scales=True).eval()
    with pytest.raises(UserError, match="unexpected"):
        load_weights(grown, pooled.state_dict(), "old.pt", "ibhfn", fresh=["gate.scales"])
    load_weights(grown, pooled.state_dict(), "old.pt", "ibhfn",
                 fresh=["gate.context", "gate.scales"])
    s2, s1 = inputs()
    with torch.no_grad():
        local = torch.sigmoid(pooled.gate.local(pooled.optical_encoder(s2)[0]))
        assert torch.allclose(grown(s2, s1).gate, local, atol=1e-6)
    with pytest.raises(UserError, match="needs mask_optical"):
        build("ibhfn", **SMALL, gate_scales=True)


def test_output_shut_moves_only_the_final_blend():
    """A higher shut level gives more of the output to the reconstruction where the gate is in
    between, and changes neither the gate nor the reconstruction."""
    s2, s1 = inputs()
    outs = []
    for shut in (GATE_SHUT, 0.5):
        torch.manual_seed(0)
        network = build("ibhfn", **SMALL, mask_optical=True, output_shut=shut).eval()
        with torch.no_grad():
            network.gate.local[-1].weight.zero_()
            network.gate.context[-1].weight.zero_()
            network.gate.local[-1].bias.fill_(0.0)      # gate = sigmoid(0) = 0.5 everywhere
            network.gate.context[-1].bias.fill_(0.0)
            outs.append(network(s2, s1))
    low, high = outs
    assert torch.equal(low.gate, high.gate) and torch.equal(low.reconstruction, high.reconstruction)
    assert torch.equal(high.restored, high.reconstruction)             # 0.5 ≤ shut: recon alone
    weight = blend_weight(low.gate)
    assert torch.allclose(low.restored, weight * s2 + (1 - weight) * low.reconstruction, atol=1e-5)
    with pytest.raises(UserError, match="output_shut"):
        build("ibhfn", **SMALL, output_shut=GATE_OPEN)


def test_full_resolution_sar_fusion_is_one_more_fusion_at_level_zero():
    """`sar_full_res` adds a bottleneck fusion of the SAR stem into the full-resolution skip and
    nothing else: with that fusion's output projection at zero the network is the plain one."""
    torch.manual_seed(0)
    plain = build("ibhfn", **SMALL, mask_optical=True).eval()
    full = build("ibhfn", **SMALL, mask_optical=True, sar_full_res=True).eval()
    keys = full.load_state_dict(plain.state_dict(), strict=False)
    assert keys.missing_keys and not keys.unexpected_keys
    assert all(key.startswith("full_res_fusion.") for key in keys.missing_keys)
    s2, s1 = inputs()
    with torch.no_grad():
        assert not torch.equal(full(s2, s1).reconstruction, plain(s2, s1).reconstruction)
        full.full_res_fusion.fuse.weight.zero_()
        full.full_res_fusion.fuse.bias.zero_()
        assert torch.equal(full(s2, s1).reconstruction, plain(s2, s1).reconstruction)
