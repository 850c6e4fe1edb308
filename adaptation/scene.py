"""Fine-tuning a copy of the network on one scene's own clear pixels.

1. Sample up to MAX_CELLS cells of CELL² px, on a grid of half-cell steps over the area
   (seeded), read them through the engine's own reader (`core.engine.open_scene`: the same
   normalisation, offset and S1 reprojection), and run the global network on them. Pixels whose
   gate is at least the model's keep-clear level (`ModelSpec.keep_full`: the pixels the engine
   keeps bit for bit as observation are the ones adaptation learns from), eroded by MARGIN px
   (cloud edges and the thin haze around them must not count as ground), are clear.
2. Cells at least MIN_CELL_CLEAR clear are the scene's training data. Their target is the
   observation where clear and the global network's own restoration elsewhere, so no real cloud
   is ever a target and the loss needs no mask; simulated clouds are laid on that target. A fifth
   of the cells (at least one) are held out under fixed simulated clouds, and training cells that
   overlap them are dropped; the held-out score counts their clear (observed) pixels only.
3. Training: random cells, turned and flipped, under freshly simulated clouds (thin, thick,
   shadow: the generator training uses), restored from the clouded cell and the scene's S1 with
   the joint loss, every term on; AdamW at LEARNING_RATE. The held-out cells are scored every
   VALIDATE_EVERY steps (mean L1 of the output); the best state is kept and training stops after
   PATIENCE scores without improvement, at the step cap or at the time budget.
4. The adapted copy is kept only if it beats the global network on the held-out cells.

The step cap and the seed make a run repeatable when the cap, not the clock, ends it.
"""
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..core.engine import open_scene
from ..core.pipeline import MMAP_THRESHOLD as ENGINE_MMAP_THRESHOLD, set_mmap_threshold
from ..core.errors import Cancelled, UserError
from ..core.model_spec import load_spec, resolve_model

CELL = 64
MAX_CELLS = 384
MARGIN = 6
MIN_CELL_CLEAR = 0.5
MIN_AREA_CLEAR = 0.05
MIN_TRAIN_CELLS = 3
HELD_OUT_FRACTION = 0.15
HELD_OUT_DRAWS = 2
BATCH = 4
LEARNING_RATE = 3e-4
VALIDATE_EVERY = 20
PATIENCE = 8
DEFAULT_SECONDS = 60.0
DEFAULT_MAX_STEPS = 2000
# The schedule's step at which every loss term is fully on (the network is already trained).
_LOSS_STEP = 10 ** 6
_GATE_BATCH = 16


@dataclass
class Adaptation:
    """What adaptation did, for the run's summary."""
    adapted: bool
    message: str
    seconds: float = 0.0
    steps: int = 0
    clear_fraction: float = 0.0
    global_loss: Optional[float] = None
    adapted_loss: Optional[float] = None
    model_path: Optional[Path] = None

    @property
    def improvement(self) -> Optional[float]:
        """Relative drop of the held-out loss (0.2 = 20 % lower), when both were measured."""
        if self.global_loss is None or self.adapted_loss is None or self.global_loss <= 0:
            return None
        return 1.0 - self.adapted_loss / self.global_loss


def _torch_network(request):
    """The request's model as a trainable torch module, and its spec."""
    from ..models.export import load_network

    files = resolve_model(request.model)
    if files.torch_path is None:
        raise UserError(f"The model {files.name} has no torch weights (.pt) to adapt; give a "
                        f"model with a .pt file, or turn scene adaptation off.")
    network, spec = load_network(files.torch_path)
    return network, spec, load_spec(files)


def _cells(view, rng: np.random.Generator):
    """Origins of up to MAX_CELLS random CELL² cells on a half-cell grid over the area."""
    rows = range(0, view.height - CELL + 1, CELL // 2)
    cols = range(0, view.width - CELL + 1, CELL // 2)
    origins = [(r, c) for r in rows for c in cols]
    if not origins:
        return []
    chosen = rng.choice(len(origins), size=min(MAX_CELLS, len(origins)), replace=False)
    return [origins[i] for i in sorted(chosen)]


def _run_global(network, s2: np.ndarray, s1: np.ndarray, torch):
    """The global network's (restored, gate) on a stack of cells."""
    restored, gates = [], []
    with torch.no_grad():
        for start in range(0, len(s2), _GATE_BATCH):
            out = network(torch.from_numpy(s2[start:start + _GATE_BATCH]),
                          torch.from_numpy(s1[start:start + _GATE_BATCH]))
            restored.append(out.restored.clamp(0.0, 1.0).numpy())
            gates.append(out.gate[:, 0].numpy())
    return np.concatenate(restored), np.concatenate(gates)


@dataclass
class SceneCells:
    """The scene's usable cells: origins, S1, target (observation where clear, the global
    restoration elsewhere) and the clear mask; plus the clear fraction of the sampled area."""
    origins: np.ndarray
    s1: np.ndarray
    target: np.ndarray
    clear: np.ndarray
    clear_fraction: float


def clear_cells(network, view, rng, torch, clear_gate: float) -> Optional[SceneCells]:
    origins = _cells(view, rng)
    if not origins:
        return None
    reads = [view.read(r, c, CELL, CELL) for r, c in origins]
    s2 = np.stack([r[0] for r in reads]).astype(np.float32)
    s1 = np.stack([r[1] for r in reads]).astype(np.float32)
    valid = np.stack([r[2] for r in reads])
    restored, gate = _run_global(network.eval(), s2, s1, torch)
    not_clear = torch.from_numpy(((gate < clear_gate) | ~valid).astype(np.float32))[:, None]
    grown = torch.nn.functional.max_pool2d(not_clear, 2 * MARGIN + 1, stride=1, padding=MARGIN)
    clear = grown[:, 0].numpy() == 0
    fraction = float(clear[valid].mean()) if valid.any() else 0.0
    keep = clear.mean(axis=(1, 2)) >= MIN_CELL_CLEAR
    target = np.where(clear[:, None], s2, restored)[keep]
    return SceneCells(np.asarray(origins)[keep], s1[keep], target, clear[keep], fraction)


def _split(origins: np.ndarray, rng: np.random.Generator):
    """(training, held-out) cell indices: the held-out cells are one compact group (the cells
    nearest a random one), so the training cells dropped for overlapping them are few."""
    seed = origins[rng.integers(len(origins))]
    nearest = np.argsort(np.abs(origins - seed).max(axis=1), kind="stable")
    held = nearest[:max(1, int(round(HELD_OUT_FRACTION * len(origins))))]
    apart = np.ones(len(origins), bool)
    for i in held:
        apart &= np.abs(origins - origins[i]).max(axis=1) >= CELL
    return np.flatnonzero(apart), held


def _clouded(s2: np.ndarray, rng: np.random.Generator):
    from ..synthetic.clouds import clear_sky_target, simulate_clouds

    sample = simulate_clouds(s2, rng, kind="mixed")
    return np.clip(sample.cloudy, 0.0, 1.0).astype(np.float32), clear_sky_target(sample)


def _batch(s2, s1, indices, rng, torch, extra=None):
    from ..synthetic.augment import random_dihedral

    cloudy, sar, target, clear, extras = [], [], [], [], []
    for i in indices:
        arrays = [s2[i], s1[i]] + ([extra[i].astype(np.float32)] if extra is not None else [])
        optical, radar, *more = random_dihedral(arrays, rng)
        clouded, clear_target = _clouded(optical, rng)
        cloudy.append(clouded)
        sar.append(radar)
        target.append(optical)
        clear.append(clear_target)
        extras += more
    batch = [cloudy, sar, target, clear] + ([extras] if extra is not None else [])
    return tuple(torch.from_numpy(np.stack(a).astype(np.float32)) for a in batch)


def _held_out_loss(network, held_out, torch) -> float:
    """Mean L1 of the restoration over the held-out cells' observed (clear) pixels."""
    cloudy, sar, target, _, observed = held_out
    network.eval()
    with torch.no_grad():
        restored = network(cloudy, sar).restored.clamp(0.0, 1.0)
    network.train()
    error = (restored - target).abs().mean(dim=1)
    return float(error[observed > 0].mean())


# The engine fixes glibc's mmap threshold at 64 KB to keep its memory flat; torch's training
# steps free and reallocate MB-sized tensors every step, which at 64 KB become mmap/munmap calls:
# 3x slower steps here. Training uses glibc's largest threshold, and the engine's comes back after.
_TRAINING_MMAP_THRESHOLD = 32 << 20


def adapt_to_scene(request, out_path: Path, progress, is_cancelled) -> Adaptation:
    """Fine-tune a copy of the request's network on its scene; see the module docstring.

    Returns an `Adaptation` whose `model_path` is the adapted checkpoint written to `out_path`
    (and to `request.save_adapted`), or None when adaptation was skipped or did not help: the
    run then restores with the global network, and `message` says why.
    """
    from ..core.runtime_packages import require_package

    torch = require_package("torch")
    from ..models.export import save_checkpoint
    from ..models.losses import DynamicWeights, JointLoss

    started = time.perf_counter()
    budget = DEFAULT_SECONDS if request.adapt_seconds is None else float(request.adapt_seconds)
    if budget <= 0:
        raise UserError(f"The adaptation budget must be a positive number of seconds (got "
                        f"{request.adapt_seconds}).")
    max_steps = DEFAULT_MAX_STEPS if request.adapt_steps is None else int(request.adapt_steps)
    if request.threads:
        torch.set_num_threads(request.threads)
    torch.manual_seed(request.seed)
    rng = np.random.default_rng(request.seed)
    network, spec_raw, spec = _torch_network(request)
    progress(0.0, "adaptation: finding the scene's clear pixels")
    with open_scene(request) as view:
        cells = clear_cells(network, view, rng, torch, spec.keep_full)
    clear_fraction = cells.clear_fraction if cells is not None else 0.0
    train, held = _split(cells.origins, rng) if cells is not None and len(cells.origins) \
        else ([], [])
    if clear_fraction < MIN_AREA_CLEAR or len(train) < MIN_TRAIN_CELLS:
        return Adaptation(False, f"Scene adaptation skipped: {clear_fraction:.0%} of the area "
                                 f"is clear enough to learn from, in {len(train)} usable "
                                 f"{CELL}-px cells (it needs at least {MIN_AREA_CLEAR:.0%} and "
                                 f"{MIN_TRAIN_CELLS} cells); restored with the global model.",
                          seconds=time.perf_counter() - started, clear_fraction=clear_fraction)
    s2, s1 = cells.target, cells.s1
    held_out = _batch(s2, s1, np.repeat(held, HELD_OUT_DRAWS), rng, torch, extra=cells.clear)
    adapted = copy.deepcopy(network).train()
    global_loss = best_loss = _held_out_loss(adapted, held_out, torch)
    best_state = copy.deepcopy(adapted.state_dict())
    optimizer = torch.optim.AdamW(adapted.parameters(), lr=LEARNING_RATE)
    loss = JointLoss(DynamicWeights())
    step, stale = 0, 0
    set_mmap_threshold(_TRAINING_MMAP_THRESHOLD)
    try:   # the engine's threshold comes back on cancel and on error too
        while step < max_steps and stale < PATIENCE:
            elapsed = time.perf_counter() - started
            if elapsed > budget:
                break
            if is_cancelled():
                raise Cancelled()
            cloudy, sar, target, clear = _batch(s2, s1, rng.choice(train, BATCH), rng, torch)
            total, _ = loss(adapted(cloudy, sar), target, cloudy, _LOSS_STEP, clear)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(adapted.parameters(), 1.0)
            optimizer.step()
            step += 1
            if step % VALIDATE_EVERY == 0:
                held_loss = _held_out_loss(adapted, held_out, torch)
                if held_loss < best_loss:
                    best_loss, stale = held_loss, 0
                    best_state = copy.deepcopy(adapted.state_dict())
                else:
                    stale += 1
            progress(min(1.0, max(step / max_steps, elapsed / budget)),
                     f"adaptation: step {step}, held-out L1 {best_loss:.4f}")
    finally:
        set_mmap_threshold(ENGINE_MMAP_THRESHOLD)
    seconds = time.perf_counter() - started
    outcome = Adaptation(False, "", seconds=seconds, steps=step, clear_fraction=clear_fraction,
                         global_loss=global_loss, adapted_loss=best_loss)
    if best_loss >= global_loss:
        outcome.message = (f"Scene adaptation did not improve the held-out clear cells "
                           f"(L1 {global_loss:.4f} -> {best_loss:.4f} after {step} steps); "
                           f"restored with the global model.")
        return outcome
    adapted.load_state_dict(best_state)
    save_checkpoint(adapted.eval(), spec_raw, out_path)
    if request.save_adapted:
        save_checkpoint(adapted, spec_raw, Path(request.save_adapted))
    outcome.adapted, outcome.model_path = True, out_path
    outcome.message = (f"Adapted to the scene in {seconds:.0f} s ({step} steps on "
                       f"{len(train)} clear cells, {clear_fraction:.0%} of the area clear): "
                       f"held-out L1 {global_loss:.4f} -> {best_loss:.4f} "
                       f"({outcome.improvement:.0%} lower).")
    return outcome
