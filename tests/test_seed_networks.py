"""The other seed networks, MMCANet and SG-BAFM: the registry contract at their own size
multiples, the parts docs/ARCHITECTURE.md describes (windowed cross-attention, who asks whom,
progressive stages, tile-local ASPP) and the export of their default settings. The training step
on real data is in test_ibhfn.py, with every other registered network."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from sar_cloud_removal.cli import main
from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.model_spec import load_spec, resolve_model
from sar_cloud_removal.models.blocks import WindowCrossAttention
from sar_cloud_removal.models.export import load_network
from sar_cloud_removal.models.mmcanet import ASPP, MMCANet
from sar_cloud_removal.models.registry import build, resolved_config
from sar_cloud_removal.models.sgbafm import SGBAFMNet

from small_networks import SMALL_CONFIGS

SEED_NETWORKS = ["mmcanet", "sgbafm"]
TOLERANCE = 1e-4


def random_inputs(height, width, batch=2):
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(batch, 13, height, width, generator=generator),
            torch.rand(batch, 2, height, width, generator=generator))


def test_registry_builds_both_by_name_and_refuses_a_bad_setting():
    assert isinstance(build("mmcanet"), MMCANet)
    assert isinstance(build("sgbafm"), SGBAFMNet)
    with pytest.raises(UserError, match="sgbafm configuration .* is invalid"):
        build("sgbafm", attention_dim=128, heads=3)


@pytest.mark.parametrize("architecture, config, multiple", [
    ("mmcanet", {}, 64), ("mmcanet", dict(downsamplings=2, window=4), 16),
    ("sgbafm", {}, 128), ("sgbafm", dict(window=2), 32)])
def test_size_multiple_is_one_attention_window_in_input_pixels(architecture, config, multiple):
    assert build(architecture, **config).size_multiple == multiple


@pytest.mark.parametrize("architecture", SEED_NETWORKS)
@pytest.mark.parametrize("rows, cols", [(1, 3), (2, 1)])
def test_output_contract_at_multiples_of_the_size_multiple(architecture, rows, cols):
    network = build(architecture, **SMALL_CONFIGS[architecture]).eval()
    height, width = rows * network.size_multiple, cols * network.size_multiple
    s2, s1 = random_inputs(height, width)
    with torch.no_grad():
        out = network(s2, s1)
    assert out.restored.shape == (2, 13, height, width)
    assert torch.isfinite(out.restored).all()
    assert out.gate.shape == (2, 1, height, width)
    assert ((out.gate > 0) & (out.gate < 1)).all()      # the mask head's clear-sky probability
    assert out.kl.shape == () and out.kl.item() == 0.0
    without = build(architecture, **SMALL_CONFIGS[architecture], mask_head=False).eval()
    with torch.no_grad():
        assert torch.equal(without(s2, s1).gate, torch.ones(2, 1, height, width))  # "no gate"


@pytest.mark.parametrize("architecture", ["dsen2cr", *SEED_NETWORKS])
def test_mask_head_is_trained_by_the_mask_term_and_never_changes_the_restoration(architecture):
    """The gate these papers lack comes from a cloud-detector head: the gate loss reaches it,
    and the restored image is the paper's network alone, whatever the head's weights."""
    from sar_cloud_removal.models.losses import gate_loss

    torch.manual_seed(0)
    network = build(architecture, **SMALL_CONFIGS[architecture])
    side = network.size_multiple * 2 if network.size_multiple > 1 else 16
    s2, s1 = random_inputs(side, side, batch=1)
    out = network(s2, s1)
    clear = (s2[:, 0] > 0.5).float()
    gate_loss(out.gate, clear).backward()
    head = network.mask.body[-1]
    assert head.weight.grad.abs().sum() > 0 and head.bias.grad.abs().sum() > 0
    with torch.no_grad():
        before = network(s2, s1).restored
        for parameter in network.mask.parameters():
            parameter.add_(torch.randn_like(parameter))
        after = network(s2, s1)
    assert torch.equal(after.restored, before)
    assert not torch.allclose(after.gate, out.gate.detach())


def test_window_attention_equals_attention_computed_window_by_window():
    torch.manual_seed(0)
    block = WindowCrossAttention(3, 2, 4, 5, dim=6, heads=2, window=2)
    query, key, value = torch.rand(1, 3, 4, 6), torch.rand(1, 2, 4, 6), torch.rand(1, 4, 4, 6)
    q, k, v = block.query(query), block.key(key), block.value(value)
    expected = torch.zeros(1, 6, 4, 6)
    for top in (0, 2):
        for left in (0, 2, 4):
            for head in (slice(0, 3), slice(3, 6)):                 # 3 channels per head
                # the window's 4 pixels as tokens of 3 features, in raster order
                qw, kw, vw = (t[0, head, top:top + 2, left:left + 2].reshape(3, 4).T
                              for t in (q, k, v))
                attended = torch.softmax(qw @ kw.T / 3 ** 0.5, dim=-1) @ vw
                expected[0, head, top:top + 2, left:left + 2] = attended.T.reshape(3, 2, 2)
    assert torch.allclose(block(query, key, value), block.out(expected), atol=1e-6)


def _attention_inputs(network, attention, s2, s1):
    """(query, key, value) as the network's attention block receives them."""
    received = []
    handle = attention.register_forward_hook(lambda module, inputs, output: received.append(inputs))
    with torch.no_grad():
        network(s2, s1)
    handle.remove()
    return received[0]


def test_mmcanet_optical_features_ask_and_sar_features_answer():
    network = build("mmcanet", **SMALL_CONFIGS["mmcanet"]).eval()
    s2, s1 = random_inputs(32, 32)
    query, key, value = _attention_inputs(network, network.cross_attention, s2, s1)
    with torch.no_grad():
        assert torch.equal(query, network.optical_extractor(s2)[-1])
        assert torch.equal(key, network.sar_extractor(s1)[-1]) and torch.equal(value, key)


def test_sgbafm_sar_tokens_are_query_and_key_and_optical_tokens_the_value():
    network = build("sgbafm", **SMALL_CONFIGS["sgbafm"]).eval()
    s2, s1 = random_inputs(32, 64)
    fusion = network.fusion
    query, key, value = _attention_inputs(network, fusion.attention, s2, s1)
    with torch.no_grad():
        optical, sar = network.optical(s2), network.sar(s1)
        assert torch.equal(query, fusion.sar_tokens(fusion.guide(optical, sar)))
        assert torch.equal(key, query)
        assert torch.equal(value, fusion.optical_tokens(optical))
        # the SAR features reaching the tokens are those of the SAR input, weighted by guidance
        assert (fusion.guide(optical, sar).abs() <= sar.abs()).all()


def test_mmcanet_restores_coarse_to_fine_and_outputs_its_finest_stage():
    network = build("mmcanet", **SMALL_CONFIGS["mmcanet"]).eval()
    s2, s1 = random_inputs(32, 48)
    with torch.no_grad():
        stages = network.progressive(s2, s1)
        assert [tuple(image.shape[2:]) for image in stages] == [(8, 12), (16, 24), (32, 48)]
        assert torch.equal(network(s2, s1).restored, stages[-1])
        finest = network.stages[-1].correction[-1]
        finest.weight.zero_()
        finest.bias.zero_()
        coarser = network.progressive(s2, s1)[-2]
    # with no correction of its own, the finest stage passes on the coarser stage's correction
    upsampled = F.interpolate(coarser - F.avg_pool2d(s2, 2), scale_factor=2.0, mode="bilinear",
                              align_corners=False)
    with torch.no_grad():
        assert torch.allclose(network(s2, s1).restored, s2 + upsampled, atol=1e-6)


@pytest.mark.parametrize("architecture", SEED_NETWORKS)
def test_zero_corrections_return_the_cloudy_input_exactly(architecture):
    network = build(architecture, **SMALL_CONFIGS[architecture]).eval()
    last_layers = [stage.correction[-1] for stage in network.stages] \
        if architecture == "mmcanet" else [network.reconstruction]
    s2, s1 = random_inputs(32, 64)
    with torch.no_grad():
        for layer in last_layers:
            layer.weight.zero_()
            layer.bias.zero_()
        assert torch.equal(network(s2, s1).restored, s2)


def test_aspp_sees_only_its_neighbourhood_so_tiles_agree():
    aspp = ASPP(4).eval()
    x = torch.rand(1, 4, 32, 32)
    far = x.clone()
    far[..., 20:, 20:] = 5.0
    with torch.no_grad():
        assert torch.equal(aspp(x)[..., :12, :12], aspp(far)[..., :12, :12])


@pytest.mark.parametrize("architecture", SEED_NETWORKS)
def test_export_command_writes_a_default_network_whose_onnx_matches_torch_on_real_data(
        architecture, real_triplet, tmp_path, capsys):
    out = tmp_path / f"{architecture}.onnx"
    assert main(["export", "--untrained", architecture, "--out", str(out)]) == 0
    spec = load_spec(resolve_model(out))               # .onnx and .pt agree
    assert (spec.architecture, spec.config) == (architecture, resolved_config(architecture, {}))
    network, _ = load_network(out.with_suffix(".pt"))
    assert spec.size_multiple == network.size_multiple
    # traced on a square batch of 2 at one window's size: run on another batch, size and shape
    s2, s1 = (torch.from_numpy(image[None, :, 64:192]) for image in (real_triplet.cloudy,
                                                                     real_triplet.s1))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["restored", "gate"], {"s2": s2.numpy(), "s1": s1.numpy()})
    with torch.no_grad():
        want = network(s2, s1)
    for onnx_output, torch_output in zip(got, want[:2]):
        assert onnx_output.shape == tuple(torch_output.shape)
        assert np.abs(onnx_output - torch_output.numpy()).max() <= TOLERANCE
