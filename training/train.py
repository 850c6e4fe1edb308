"""`sar-cloud-removal train --config CFG.json [--resume] [--out runs/NAME]`.

One loop serves pre-training (simulated clouds over clear pairs), fine-tuning (real triplets,
optionally mixed with simulated ones) and the ablations: everything that differs lives in the
JSON config (see configs/ and docs/EVALUATION.md), so a run is reproducible from its config, seed
and log alone. Validation scores whole held-out scenes with the same protocol as `evaluate`.

Under `torchrun` every rank trains on its own share of the random examples (DistributedSampler
over the mixed dataset) and DistributedDataParallel keeps the weights identical; rank 0 alone
validates, logs and writes checkpoints. At the end the ranks compare a hash of their weights, so a
silent divergence cannot go unnoticed.
"""
import hashlib
import json
import math
import os
import time
from pathlib import Path

from ..core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"

DEFAULTS = {
    "name": "ibhfn", "version": "0.0.0",
    "model": {"architecture": "ibhfn", "config": {}},
    "data": {"root": None, "pair_sources": ["terramind", "sen1floods11", "dsen2cr_dsp",
                                            "bigearthnet"],
             "packed": "sen12mscr/packed", "holdout_packed": [],
             "validation_folders": ["sen12mscr"],
             "synthetic_weight": 1.0, "real_weight": 0.0,
             "clouds_over_packed_targets": True, "cloud_kind": "mixed"},
    "loss": {}, "loss_step_offset": 0,
    "crop": 128, "batch": 4, "steps": 1000, "lr": 3e-4, "weight_decay": 0.0,
    "warmup_steps": 50, "grad_clip": 1.0, "seed": 0, "threads": 2, "workers": 0,
    "val_every": 100, "log_every": 10, "max_minutes": None, "init": None,
    "tile_size": 256, "overlap": 32, "selection_metric": "psnr",
}


def load_config(path) -> dict:
    """The config file merged over DEFAULTS (one level deep for the `data` and `model` blocks)."""
    path = Path(path)
    try:
        given = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"The training config {path} does not exist; give a JSON config file "
                        f"(see configs/).") from None
    except ValueError as exc:
        raise UserError(f"The training config {path} is not valid JSON ({exc}); fix it.") from None
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise UserError(f"The training config {path} has unknown keys {unknown}; remove or "
                        f"rename them (see configs/).")
    config = json.loads(json.dumps(DEFAULTS))
    for key, value in given.items():
        if isinstance(value, dict) and key in ("data", "model"):
            config[key].update(value)
        else:
            config[key] = value
    return config


class Distributed:
    """Rank, world size and device of this process; a single process when not under torchrun."""

    def __init__(self):
        import torch
        import torch.distributed as dist

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        cuda = torch.cuda.is_available()
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda \
            else torch.device("cpu")
        if self.world > 1:
            dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, value) -> list:
        import torch.distributed as dist

        if self.world == 1:
            return [value]
        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        import torch.distributed as dist

        if self.world > 1:
            dist.destroy_process_group()


def build_data(config: dict):
    """(training dataset, validation triplets) as the config's data block describes."""
    from .dataset import MixedDataset, RealTriplets, SyntheticClouds, as_clear_pair
    from .evaluate import load_triplets
    from .packed import find_packed, read_packed
    from .pairs import load_clear_pairs

    data = config["data"]
    root = Path(data["root"] or os.environ.get("SAR_CR_SHARED_DATA", DEFAULT_DATA_ROOT))
    if not root.is_dir():
        raise UserError(f"The training data folder {root} does not exist; set data.root in the "
                        f"config.")
    holdout = {str(i) for i in data["holdout_packed"]}
    packed_dir = root / data["packed"] if data["packed"] else None
    packed_ids = find_packed(packed_dir) if packed_dir and packed_dir.is_dir() else []
    train_real = [read_packed(packed_dir, i) for i in packed_ids if i not in holdout]
    validation = [read_packed(packed_dir, i) for i in packed_ids if i in holdout]
    for folder in data["validation_folders"]:
        validation += load_triplets(root / folder)
    if holdout - set(packed_ids):
        raise UserError(f"Held-out packed ids {sorted(holdout - set(packed_ids))} are not in "
                        f"{packed_dir}; fix data.holdout_packed.")

    sources, weights = [], []
    if data["synthetic_weight"] > 0:
        pairs = load_clear_pairs(root, data["pair_sources"])
        if data["clouds_over_packed_targets"]:
            pairs += [as_clear_pair(t) for t in train_real]
        small = [p.name for p in pairs if min(p.valid.shape) < config["crop"]]
        if small:
            raise UserError(f"The crop of {config['crop']} px is larger than the scene "
                            f"{small[0]}; lower 'crop' or drop its source from "
                            f"data.pair_sources.")
        sources.append(SyntheticClouds(pairs, data["cloud_kind"]))
        weights.append(data["synthetic_weight"])
    if data["real_weight"] > 0:
        sources.append(RealTriplets(train_real))
        weights.append(data["real_weight"])
    if not sources:
        raise UserError("The config trains on nothing; give data.synthetic_weight or "
                        "data.real_weight a positive value.")
    # one "epoch" is a fixed number of random draws; its index reseeds the draws
    length = config["batch"] * 200
    return MixedDataset(sources, weights, config["crop"], length, config["seed"]), validation


def weights_digest(model) -> str:
    """A hash of every parameter and buffer, to prove ranks hold identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def validate(model, triplets, size_multiple: int) -> dict:
    """Mean protocol metrics of the model and the cloudy input over whole held-out scenes."""
    import torch

    from .evaluate import score_triplet, summarise

    def predict(s2, s1):
        out = model(torch.from_numpy(s2), torch.from_numpy(s1))
        return out.restored.numpy(), out.gate.numpy()

    model.eval()
    with torch.no_grad():
        rows = [score_triplet(predict, t, size_multiple) for t in triplets]
    model.train()
    return summarise(rows)


class RunLog:
    """Append-only JSON lines: every loss term, every validation, written by rank 0 only."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            from .evaluate import json_safe

            with self.path.open("a") as f:
                f.write(json.dumps(json_safe(record)) + "\n")


def _lr_factor(config: dict):
    warmup, steps = max(1, config["warmup_steps"]), max(1, config["steps"])

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))
    return factor


def _spec(config: dict, model) -> dict:
    from ..core.model_spec import make_spec
    from ..models.registry import resolved_config

    architecture = config["model"]["architecture"]
    return make_spec(config["name"], config["version"], architecture,
                     resolved_config(architecture, config["model"]["config"]),
                     tile_size=config["tile_size"],
                     overlap=config["overlap"], size_multiple=model.size_multiple)


def train(config: dict, out: Path, resume: bool = False) -> dict:
    """Run (or continue) one training run; returns the best validation means."""
    import torch
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    from ..core.model_spec import read_checkpoint
    from ..models.export import save_checkpoint
    from ..models.losses import DynamicWeights, JointLoss
    from ..models.registry import build

    dist = Distributed()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out / "log.jsonl", dist.main)
    latest_path, best_path = out / "latest.pt", out / "best.pt"

    model = build(config["model"]["architecture"], **config["model"]["config"])
    spec = _spec(config, model)
    if config["init"] and not resume:
        model.load_state_dict(read_checkpoint(Path(config["init"]))["state_dict"])
    model.to(dist.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"],
                                  weight_decay=config["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))
    step, best = 0, {"step": None, "value": None, "means": None}
    if resume:
        if not latest_path.is_file():
            raise UserError(f"There is no checkpoint to resume in {out}; drop --resume to start "
                            f"a new run.")
        state = torch.load(latest_path, map_location=dist.device, weights_only=True)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best = state["step"], state["best"]
    elif dist.main:
        (out / "config.json").write_text(json.dumps(config, indent=2))
        log.path.write_text("")

    dataset, validation = build_data(config)
    sampler = DistributedSampler(dataset, num_replicas=dist.world, rank=dist.rank,
                                 shuffle=True, seed=config["seed"])
    loader = DataLoader(dataset, batch_size=config["batch"], sampler=sampler,
                        num_workers=config["workers"], drop_last=True)
    network = DistributedDataParallel(model) if dist.world > 1 else model
    loss_fn = JointLoss(DynamicWeights(**config["loss"]))
    selection = config["selection_metric"]
    higher_is_better = selection in ("psnr", "ssim", "gate_auc")

    def checkpoint():
        if not dist.main:
            return
        save_checkpoint(model, spec, latest_path,
                        extra={"optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "step": step, "best": best})

    def run_validation():
        nonlocal best
        if not dist.main or not validation:
            return
        val_started = time.perf_counter()
        means = validate(model, validation, model.size_multiple)
        log.write({"kind": "val", "step": step, "seconds": time.perf_counter() - val_started,
                   **{f"val_{k}": v for k, v in means["model"].items()},
                   **{f"baseline_{k}": v for k, v in means["cloudy_input"].items()}})
        value = means["model"][selection]
        better = best["value"] is None or (value > best["value"] if higher_is_better
                                           else value < best["value"])
        if better:
            best = {"step": step, "value": value, "means": means}
            save_checkpoint(model, spec, best_path)

    started, last_log, sums, count = time.perf_counter(), time.perf_counter(), {}, 0
    epoch, stopped = step // len(loader), False
    model.train()
    while step < config["steps"] and not stopped:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for batch in loader:
            if step >= config["steps"]:
                break
            s2, s1, target = (batch[k].to(dist.device) for k in ("s2", "s1", "target"))
            output = network(s2, s1)
            total, terms = loss_fn(output, target, s2, step + config["loss_step_offset"])
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
            optimizer.step()
            scheduler.step()
            step += 1
            for key, value in {"total": total, "grad_norm": grad_norm, **terms}.items():
                sums[key] = sums.get(key, 0.0) + float(torch.as_tensor(value).detach())
            count += 1
            if step % config["log_every"] == 0 or step == config["steps"]:
                now = time.perf_counter()
                log.write({"kind": "train", "step": step, "lr": scheduler.get_last_lr()[0],
                           "seconds_per_step": (now - last_log) / count,
                           "elapsed_s": now - started,
                           **{k: v / count for k, v in sums.items()}})
                sums, count, last_log = {}, 0, now
            out_of_time = (config["max_minutes"] is not None
                           and time.perf_counter() - started > 60 * config["max_minutes"])
            if dist.world > 1:  # every rank must stop at the same step
                out_of_time = any(dist.gather(out_of_time))
            if step % config["val_every"] == 0 or step == config["steps"] or out_of_time:
                run_validation()
                checkpoint()
            if out_of_time:
                log.write({"kind": "stopped", "step": step, "reason": "max_minutes reached"})
                stopped = True
                break
        epoch += 1

    digests = dist.gather(weights_digest(model))
    log.write({"kind": "end", "step": step, "world_size": dist.world,
               "elapsed_s": time.perf_counter() - started, "rank_weight_digests": digests,
               "best_step": best["step"], "best_value": best["value"]})
    dist.close()
    if len(set(digests)) > 1:
        raise RuntimeError(f"ranks ended with different weights: {digests}")
    return best


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, metavar="CFG.json",
                        help="training config (model, data, crop, batch, steps, lr, loss, seed)")
    parser.add_argument("--out", default=None, metavar="runs/NAME",
                        help="run folder for checkpoints and the log (default runs/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run folder's latest checkpoint")


def run(args) -> int:
    config = load_config(args.config)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    best = train(config, out, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        value = best["value"]
        shown = "no validation set" if value is None else \
            f"best validation {config['selection_metric']} {value:.4f} at step {best['step']}"
        print(f"training finished: {shown}; checkpoints in {out}")
    return 0
