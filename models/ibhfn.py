"""IB-HFN: the information-bottleneck-driven high-fidelity SAR-optical fusion network (seeds
000/001), realised as SPEC §5 describes.

    s2 ─ optical encoder ─ o0 ─────────────────────────────┐ (skip, optical only)
                           o1..oD ─┐                        decoder ── reconstruction ─┐
    s1 ─ SAR encoder ───── s1..sD ─┴ bottleneck fusion ─────┘   │                      │
                                     (one per level 1..D)       └─ local–global gate g │
    s2 ─ 3×3 Dirac skip ─────────────────────────────────────────────────────────────────┤
                                    restored = w(g) · skip(s2) + (1 − w(g)) · reconstruction

The gate g is the clear-sky confidence (trained against cloud masks); the blend weight w(g) is g
stretched so that it reaches exactly 0 and 1 (`blend_weight`): under opaque cloud the optical
path is shut completely, and the output there is the reconstruction alone, never a dimmed copy
of the cloud.

The two streams never mix before the bottleneck fusion, and by default SAR never enters at full
resolution, where its speckle is strongest (`sar_full_res` adds a bottleneck fusion there too).
The paper publishes no widths or depths; the defaults are sized for the efficient end (≈1.1 M
parameters, ≈3.6 GMAC per 256² patch) so it trains on a CPU.

With `mask_optical` (the shipped configuration) the gate is computed first, from the optical
encoder's own features (stem and deepest level), and every optical feature level is multiplied
by w(g) (average-pooled to its resolution) before it reaches the fusion and the decoder. Under
opaque cloud the decoder then receives no optical feature at all, only SAR and the context of
clear neighbours, so the reconstruction cannot reproduce the cloud's own texture; without it the
full-resolution optical skip carried the cloud's relief into the reconstruction (the "cloud
shapes under thick cloud" of docs/EVALUATION.md). One gate decides both what the decoder may see
and what passes through. The paper does not mask; it is this project's addition, off by default
for the paper's network.

With `scene_context` the deepest level also receives what the tile's clear pixels say about the
scene: the mean spectrum of the input's clear pixels (weighted by w(g)), the clear fraction and
the clear-weighted mean of the deepest optical features, through a small MLP, added everywhere.
A convolution's receptive field cannot reach across a large cloud; this tells the middle of it
which colour the clear ground of the same date has. With `detached_gates` the gate learns from
the mask term alone (the blend and the masking use it without gradient): it stays a cloud
detector calibrated against the masks, instead of becoming a mixing weight that opens wherever
the pass-through happens to lower the reconstruction loss. With `gate_scales` the gate reads
every optical level (MultiScaleGate) instead of the stem and a tile-wide pooled context
(the paper's local–global gate): a per-pixel decision from a neighbourhood of growing size, so
the clear ground of a mostly cloudy tile is no longer held down with the rest of the tile.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import conv3x3, no_gate, res_blocks
from .network_io import S1_CHANNELS, S2_CHANNELS, NetworkOutput

# log σ² is clamped so that exp() can neither overflow nor vanish while the bottleneck is young.
_LOGVAR_LIMIT = 8.0
# σ starts at e^-2 ≈ 0.14 rather than 1: unit noise would drown the young SAR features, and the
# decoder would first learn to ignore SAR altogether. The KL term then decides how much noise
# each channel and pixel tolerates.
_LOGVAR_INIT = -4.0
# The gate starts mostly open (sigmoid(2) ≈ 0.88) so that, with the Dirac skip, an untrained
# network already passes clear pixels through and training only has to learn where to close it.
_GATE_INIT_LOGIT = 2.0
# Gate values at or below GATE_SHUT give blend weight 0 (optical path shut), at or above
# GATE_OPEN weight 1; linear in between. A sigmoid never reaches either end by itself.
GATE_SHUT = 0.05
GATE_OPEN = 0.95


def blend_weight(gate: torch.Tensor, shut: float = GATE_SHUT) -> torch.Tensor:
    """The optical skip's share of the output for a gate value: exactly 0 at gate ≤ `shut`
    (opaque cloud), exactly 1 at gate ≥ GATE_OPEN."""
    return ((gate - shut) / (GATE_OPEN - shut)).clamp(0.0, 1.0)


class Encoder(nn.Module):
    """A stem at full resolution, then `downsamplings` stride-2 stages; returns every level."""

    def __init__(self, in_channels: int, widths: list, depth: int):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, widths[0]), nn.ReLU(inplace=True),
                                  res_blocks(widths[0], depth))
        self.stages = nn.ModuleList(
            nn.Sequential(conv3x3(w_in, w_out, stride=2), nn.ReLU(inplace=True),
                          res_blocks(w_out, depth))
            for w_in, w_out in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> list:
        levels = [self.stem(x)]
        for stage in self.stages:
            levels.append(stage(levels[-1]))
        return levels


class SpatialBottleneckFusion(nn.Module):
    """SIBF: compress SAR features through a channel-wise variational information bottleneck,
    then fuse them into the optical features.

    1×1 convolutions predict μ and log σ² per channel and pixel. Training samples
    z = μ + σ·ε, which makes SAR detail that cannot survive the noise (unstructured speckle)
    costly to carry; inference uses z = μ, so outputs are deterministic. With
    `variational=False` (the ablation) z is a plain 1×1 projection and the KL is zero.

    The KL to N(0, 1) is the mean over batch, channels and pixels: per latent element, so its
    weight β means the same whatever the width and the patch size.
    """

    def __init__(self, optical_channels: int, sar_channels: int, variational: bool = True):
        super().__init__()
        self.mu = nn.Conv2d(sar_channels, sar_channels, 1)
        self.logvar = nn.Conv2d(sar_channels, sar_channels, 1) if variational else None
        if self.logvar is not None:
            nn.init.constant_(self.logvar.bias, _LOGVAR_INIT)
        self.fuse = nn.Conv2d(optical_channels + sar_channels, optical_channels, 1)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor):
        mu = self.mu(sar)
        if self.logvar is None:
            z, kl = mu, mu.new_zeros(())
        else:
            logvar = self.logvar(sar).clamp(-_LOGVAR_LIMIT, _LOGVAR_LIMIT)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
            kl = 0.5 * torch.mean(mu.square() + logvar.exp() - 1.0 - logvar)
        fused = optical + F.relu(self.fuse(torch.cat([optical, z], dim=1)))
        return fused, kl


class LocalGlobalGate(nn.Module):
    """g = sigmoid(local conv branch + broadcast global context from a pooled MLP).

    The local branch sees full-resolution features (where is it clear?); the global branch sees
    the pooled deepest features (how cloudy is this patch overall?), which shifts the whole gate
    at once. Both are the decoder's, or with `mask_optical` the optical encoder's (the decoder's
    are then masked by this very gate).
    """

    def __init__(self, local_channels: int, global_channels: int):
        super().__init__()
        self.local = nn.Sequential(conv3x3(local_channels, local_channels), nn.ReLU(inplace=True),
                                   nn.Conv2d(local_channels, 1, 1))
        hidden = max(global_channels // 4, 8)
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(global_channels, hidden, 1),
                                     nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))
        nn.init.constant_(self.local[-1].bias, _GATE_INIT_LOGIT)

    def forward(self, local: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.local(local) + self.context(deep))


class SceneContext(nn.Module):
    """What the clear pixels of the tile say, broadcast to the deepest level: their mean
    spectrum, their fraction and their mean deepest optical features (already masked), through
    a 1×1 MLP whose last layer starts at zero, so a network grown from one without it starts
    where that one was. A tile with no clear pixel gives zeros and fraction 0."""

    def __init__(self, deep_channels: int, hidden: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(S2_CHANNELS + 1 + deep_channels, hidden, 1),
                                 nn.ReLU(inplace=True), nn.Conv2d(hidden, deep_channels, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, s2: torch.Tensor, weights: list, deep: torch.Tensor) -> torch.Tensor:
        """`weights`: the clear weight at every level (`pooled_weights`); `deep` is masked."""
        weight, deep_weight = weights[0], weights[-1]
        total = weight.sum(dim=(2, 3), keepdim=True)
        colour = (s2 * weight).sum(dim=(2, 3), keepdim=True) / (total + 1.0)
        fraction = weight.mean(dim=(2, 3), keepdim=True)
        features = deep.sum(dim=(2, 3), keepdim=True) / (deep_weight.sum(dim=(2, 3), keepdim=True)
                                                         + 1.0)
        return self.mlp(torch.cat([colour, fraction, features], dim=1))


class MultiScaleGate(nn.Module):
    """g = sigmoid(local conv branch + Σ_l upsampled conv branch on optical level l).

    Each optical level adds its own logit map, bilinear up to full resolution: the deeper levels
    see far enough to tell a cloud from a bright roof, a beach or snow, and the gate stays a
    per-pixel decision. LocalGlobalGate's pooled context instead shifts the whole tile at once:
    a tile that is mostly cloud lowers the gate of its clear ground too (0.7 where the pixel is
    plainly clear, on the selection scenes), and the gate of a pixel then depends on which
    tile it falls in. The local branch keeps LocalGlobalGate's names and shapes, so a network
    grown from one with that gate starts from its local branch; the level branches end in
    zero-initialised convolutions and start silent.
    """

    def __init__(self, widths: list, hidden: int = 16):
        super().__init__()
        self.local = nn.Sequential(conv3x3(widths[0], widths[0]), nn.ReLU(inplace=True),
                                   nn.Conv2d(widths[0], 1, 1))
        self.scales = nn.ModuleList(
            nn.Sequential(conv3x3(width, hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))
            for width in widths[1:])
        nn.init.constant_(self.local[-1].bias, _GATE_INIT_LOGIT)
        for branch in self.scales:
            nn.init.zeros_(branch[-1].weight)
            nn.init.zeros_(branch[-1].bias)

    def forward(self, levels: list) -> torch.Tensor:
        logit = self.local(levels[0])
        for index, (branch, level) in enumerate(zip(self.scales, levels[1:]), start=1):
            logit = logit + F.interpolate(branch(level), scale_factor=float(2 ** index),
                                          mode="bilinear", align_corners=False)
        return torch.sigmoid(logit)


def pooled_weights(weight: torch.Tensor, levels: int) -> list:
    """The weight map average-pooled to each of `levels` encoder levels (level l is 2^l
    coarser): fixed pooling factors, so the ONNX graph does not freeze the export's tile size."""
    return [F.avg_pool2d(weight, 2 ** index) if index else weight for index in range(levels)]


class Upsample(nn.Module):
    """×2 up with a channel change: 1×1 conv at the low resolution (cheaper), then bilinear."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.project = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.project(x), scale_factor=2.0, mode="bilinear",
                             align_corners=False)


class IBHFN(nn.Module):
    """The network; see the module docstring for the data flow.

    width: optical channels at full resolution, doubled at every downsampling.
    sar_width: the same for the SAR stream (narrower by default: SAR has 2 bands and is only
        fused at the downsampled levels).
    depth: residual blocks per level, in the encoders and the decoder.
    downsamplings: number of stride-2 stages; H and W must be multiples of 2**downsamplings.
    mask_optical: gate from the optical encoder, masking the optical features (module docstring).
    scene_context: give the deepest level the clear pixels' statistics (needs mask_optical).
    detached_gates: train the gate by the mask term only.
    gate_scales: with mask_optical, gate from every optical level (MultiScaleGate) instead of
        the stem and a pooled tile-wide context (LocalGlobalGate).
    sar_full_res: fuse SAR at full resolution too (a bottleneck fusion at level 0). With
        mask_optical the full-resolution skip is otherwise empty under opaque cloud, so the
        finest detail the decoder can draw there comes from the half-resolution level.
    output_shut: the gate at or below which the output is the reconstruction alone (GATE_SHUT
        by default). It changes no weight and nothing the decoder sees, only the final blend, so
        it can be chosen after training on selection scenes: at cloud fringes the gate is in
        between, and passing that share of the hazy input draws the cloud's outline.
    use_bottleneck, use_gate, dirac_skip: switch off SIBF's variational bottleneck (plain 1×1
        fusion, KL 0), the gate (restored = skip + reconstruction, gate of ones) or the Dirac
        initialisation of the skip (PyTorch's default init), for the ablations.
    """

    def __init__(self, width: int = 16, sar_width: int = 8, depth: int = 1,
                 downsamplings: int = 3, use_bottleneck: bool = True, use_gate: bool = True,
                 dirac_skip: bool = True, mask_optical: bool = False,
                 scene_context: bool = False, detached_gates: bool = False,
                 output_shut: float = GATE_SHUT, gate_scales: bool = False,
                 sar_full_res: bool = False):
        super().__init__()
        if min(width, sar_width, downsamplings) < 1 or depth < 0:
            raise ValueError("width, sar_width and downsamplings must be at least 1 and depth "
                             "at least 0")
        if (scene_context or mask_optical) and not use_gate:
            raise ValueError("mask_optical and scene_context need the gate")
        if scene_context and not mask_optical:
            raise ValueError("scene_context needs mask_optical (it weights pixels by the gate)")
        if gate_scales and not mask_optical:
            raise ValueError("gate_scales needs mask_optical (it gates from the optical levels)")
        if not 0.0 <= output_shut < GATE_OPEN:
            raise ValueError(f"output_shut must be in [0, {GATE_OPEN})")
        widths = [width * 2 ** level for level in range(downsamplings + 1)]
        sar_widths = [sar_width * 2 ** level for level in range(downsamplings + 1)]
        self.size_multiple = 2 ** downsamplings

        self.optical_encoder = Encoder(S2_CHANNELS, widths, depth)
        self.sar_encoder = Encoder(S1_CHANNELS, sar_widths, depth)
        # Level 0 is fused only with `sar_full_res`: SAR at full resolution is mostly speckle.
        self.fusions = nn.ModuleList(
            SpatialBottleneckFusion(w, s, variational=use_bottleneck)
            for w, s in zip(widths[1:], sar_widths[1:]))
        self.full_res_fusion = (SpatialBottleneckFusion(widths[0], sar_widths[0],
                                                        variational=use_bottleneck)
                                if sar_full_res else None)
        self.deep_blocks = res_blocks(widths[-1], depth)
        self.upsamples = nn.ModuleList(Upsample(w_in, w_out)
                                       for w_in, w_out in zip(widths[:0:-1], widths[-2::-1]))
        self.decoder_blocks = nn.ModuleList(res_blocks(w, depth) for w in widths[-2::-1])
        self.reconstruction = conv3x3(widths[0], S2_CHANNELS)
        if not use_gate:
            self.gate = None
        elif gate_scales:
            self.gate = MultiScaleGate(widths)
        else:
            self.gate = LocalGlobalGate(widths[0], widths[-1])
        self.gate_scales = gate_scales
        self.mask_optical, self.detached_gates = mask_optical, detached_gates
        self.output_shut = output_shut
        self.scene_context = SceneContext(widths[-1]) if scene_context else None

        self.skip = conv3x3(S2_CHANNELS, S2_CHANNELS)
        if dirac_skip:
            nn.init.dirac_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> NetworkOutput:
        optical = self.optical_encoder(s2)
        sar = self.sar_encoder(s1)
        gate = None
        if self.mask_optical:
            gate = (self.gate(optical) if self.gate_scales
                    else self.gate(optical[0], optical[-1]))
            clear = pooled_weights(blend_weight(gate.detach() if self.detached_gates else gate),
                                   len(optical))
            optical = [level * weight for level, weight in zip(optical, clear)]
        if self.full_res_fusion is None:
            skips, kls = [optical[0]], []
        else:
            fused, kl = self.full_res_fusion(optical[0], sar[0])
            skips, kls = [fused], [kl]
        for fusion, o, s in zip(self.fusions, optical[1:], sar[1:]):
            fused, kl = fusion(o, s)
            skips.append(fused)
            kls.append(kl)
        if self.scene_context is not None:
            skips[-1] = skips[-1] + self.scene_context(s2, clear, optical[-1])
        x = deep = self.deep_blocks(skips[-1])
        for upsample, blocks, skip in zip(self.upsamples, self.decoder_blocks, skips[-2::-1]):
            x = blocks(upsample(x) + skip)

        reconstruction = self.reconstruction(x)
        passthrough = self.skip(s2)
        if self.gate is None:
            restored, gate = passthrough + reconstruction, no_gate(s2)
            reconstruction = None
        else:
            if gate is None:
                gate = self.gate(x, deep)
            weight = blend_weight(gate.detach() if self.detached_gates else gate, self.output_shut)
            restored = weight * passthrough + (1.0 - weight) * reconstruction
        return NetworkOutput(restored=restored, gate=gate, kl=torch.stack(kls).mean(),
                             reconstruction=reconstruction)
