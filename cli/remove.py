"""`sar-cloud-removal remove`: the command-line face of the engine.

It only turns arguments into a `RemovalRequest`, draws progress on stderr and prints a summary;
all checks and all work happen in `core.engine`, the same code path the QGIS face uses.
"""
import sys
import time

from ..core.backends import BACKENDS, DEVICES
from ..core.errors import UserError


def add_arguments(parser):
    parser.add_argument("--s1", required=True, metavar="PATH",
                        help="Sentinel-1 GRD GeoTIFF, 2 bands (VV, VH) in dB or linear power; "
                             "zeros outside the swath and nodata give nodata")
    parser.add_argument("--s2", required=True, metavar="PATH",
                        help="Sentinel-2 L1C: a 13-band raster (B1..B12 incl. B8A and B10), a "
                             ".SAFE product folder, its .zip, its MTD_MSIL1C.xml, or a folder of "
                             "one GeoTIFF per band (B1..B12, B8A in the file names)")
    parser.add_argument("--out", required=True, metavar="PATH", help="restored 13-band GeoTIFF")
    parser.add_argument("--gate", metavar="PATH",
                        help="gate-confidence GeoTIFF (default: <out>_gate.tif)")
    parser.add_argument("--aoi", metavar="XMIN,YMIN,XMAX,YMAX[,EPSG:CODE]",
                        help="area of interest (default: the S1/S2 overlap); "
                             "coordinates in the S2 CRS unless a CRS is given")
    parser.add_argument("--model", default="default", metavar="NAME|PATH",
                        help="a shipped model name or a .onnx/.pt file (default: %(default)s)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--tile", type=int, metavar="N", help="tile size in pixels (default: the model's)")
    parser.add_argument("--overlap", type=int, metavar="N",
                        help="tile overlap in pixels (default: the model's)")
    parser.add_argument("--s2-offset", default="auto", metavar="auto|N",
                        help="radiometric offset to subtract from S2 DN: 1000 for products of "
                             "processing baseline 04.00+ (from 25 January 2022), 0 before; auto "
                             "reads it from the product's metadata, else judges the pixels and "
                             "stops when a scene is too cloudy to tell")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: all cores)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N",
                        help="tiles per inference call (default: %(default)s)")
    parser.add_argument("--raw-network", action="store_true",
                        help="write the network's output everywhere instead of keeping the "
                             "clear pixels of the input unchanged (for benchmarking the network)")
    add_adaptation_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_adaptation_arguments(parser, per_scene: bool = False):
    """--adapt and its settings (shared with `batch`, where `per_scene` makes --save-adapted a
    folder with one .pt per scene)."""
    parser.add_argument("--adapt", action="store_true",
                        help="first fine-tune a copy of the network on the scene's own clear "
                             "pixels (needs torch; see the README's scene adaptation section)")
    parser.add_argument("--adapt-seconds", type=float, default=None, metavar="S",
                        help="time budget of --adapt per scene (default: 60 s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of --adapt's random draws (default: %(default)s)")
    parser.add_argument("--save-adapted", default=None, metavar="DIR" if per_scene else "PATH.pt",
                        help="keep each scene's adapted network as DIR/<scene>.pt" if per_scene
                        else "keep the adapted network in this file")


def adaptation_summary(result) -> str:
    """' adapted to the scene (…)' / ' not adapted (…)' for the summary line, or ''."""
    outcome = result.adaptation
    if outcome is None:
        return ""
    if not outcome.adapted:
        return "; not adapted to the scene (see the note)"
    return (f"; adapted to the scene in {outcome.seconds:.0f} s, held-out error "
            f"{outcome.improvement:.0%} lower")


def parse_aoi(text):
    """'xmin,ymin,xmax,ymax[,EPSG:code]' -> ((xmin, ymin, xmax, ymax), crs or None)."""
    parts = [p.strip() for p in text.split(",")]
    crs = None
    if len(parts) == 5:
        crs = parts.pop()
        if not crs.upper().startswith("EPSG:") or not crs[5:].isdigit():
            raise UserError(f"The AOI's CRS '{crs}' is not of the form EPSG:code; "
                            "write it like EPSG:4326.")
    if len(parts) != 4:
        raise UserError(f"The AOI '{text}' must be xmin,ymin,xmax,ymax with an optional "
                        ",EPSG:code at the end.")
    try:
        xmin, ymin, xmax, ymax = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"The AOI '{text}' holds a value that is not a number; "
                        "write it as xmin,ymin,xmax,ymax.") from None
    return (xmin, ymin, xmax, ymax), crs   # the engine refuses an empty or outside box


class ProgressBar:
    """A one-line progress bar on stderr; redrawn at most a few times a second."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.started = time.monotonic()
        self.last_draw = 0.0

    def __call__(self, fraction, message=""):
        if not self.enabled:
            return
        now = time.monotonic()
        if fraction < 1.0 and now - self.last_draw < 0.2:
            return
        self.last_draw = now
        width = 30
        filled = int(round(width * max(0.0, min(1.0, fraction))))
        elapsed = now - self.started
        eta = f" ETA {elapsed * (1 - fraction) / fraction:4.0f}s" if 0.02 < fraction < 1 else ""
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}% "
                         f"{elapsed:5.0f}s{eta} {message[:40]:<40}")
        if fraction >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run(args):
    from ..adaptation import remove_clouds
    from ..core.engine import RemovalRequest

    aoi, aoi_crs = parse_aoi(args.aoi) if args.aoi else (None, None)
    request = RemovalRequest(
        s2_path=args.s2, s1_path=args.s1, out_path=args.out, gate_path=args.gate,
        aoi=aoi, aoi_crs=aoi_crs, model=args.model, backend=args.backend, device=args.device,
        tile_size=args.tile, overlap=args.overlap, s2_offset=args.s2_offset,
        threads=args.threads, batch_size=args.batch_size, raw_network=args.raw_network,
        adapt=args.adapt, adapt_seconds=args.adapt_seconds, seed=args.seed,
        save_adapted=args.save_adapted)
    bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    result = remove_clouds(request, progress=bar)
    for message in result.messages:
        print(f"note: {message}", file=sys.stderr)
    megapixels = result.megapixels
    print(f"Restored {megapixels:.2f} MP ({result.width}x{result.height} px) in "
          f"{result.seconds:.1f} s ({megapixels / max(result.seconds, 1e-9):.2f} MP/s) with "
          f"{result.model_name} on {result.backend}/{result.device}: {result.out_path}, "
          f"gate: {result.gate_path}{adaptation_summary(result)}")
    return 0
