"""`remove_clouds(request, progress, is_cancelled)`: adapt to the scene when asked, then restore.

Every face (CLI, dock task, Processing, batch) calls this one function. The adaptation stage
reports progress in the first ADAPT_SHARE of the bar with messages of its own, is cancelled by
the same `is_cancelled`, and leaves nothing behind: the adapted copy lives in a temporary
folder unless `request.save_adapted` names a file to keep it in.
"""
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from ..core import engine
from ..core.engine import RemovalRequest, RemovalResult

# Share of the progress bar given to adaptation (about its share of the time on a CPU).
ADAPT_SHARE = 0.5


def remove_clouds(request: RemovalRequest, progress: Optional[Callable] = None,
                  is_cancelled: Optional[Callable] = None) -> RemovalResult:
    """Restore `request`'s S2 image; with `request.adapt`, with a copy of the network fine-tuned
    on the scene's own clear pixels first (see adaptation/scene.py)."""
    progress = progress or (lambda fraction, message: None)
    is_cancelled = is_cancelled or (lambda: False)
    if not request.adapt:
        return engine.remove_clouds(request, progress, is_cancelled)

    from .scene import adapt_to_scene

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sar-cr-adapt-") as work:
        outcome = adapt_to_scene(
            request, Path(work) / "adapted.pt",
            lambda fraction, message: progress(ADAPT_SHARE * fraction, message), is_cancelled)
        restore = request if outcome.model_path is None else replace(
            request, model=str(outcome.model_path), backend="torch")
        result = engine.remove_clouds(
            replace(restore, adapt=False),
            lambda fraction, message: progress(ADAPT_SHARE + (1 - ADAPT_SHARE) * fraction,
                                               message), is_cancelled)
    result.messages = [outcome.message] + result.messages
    result.adaptation = outcome
    result.seconds = time.perf_counter() - started
    return result
