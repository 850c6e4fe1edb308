"""Choosing and running an inference backend (ONNX Runtime or torch) for a model.

Both backends take and return float32 NCHW numpy arrays, so the engine is the same whichever runs.
A GPU is used when asked for (or on `auto`) and it works; otherwise, and when the GPU fails in
the middle of a run, the backend continues on the CPU and records why in `messages`, because an
analyst would rather wait longer than lose the run. The runtimes are imported only when a backend
is created: the plugin must load without them.
"""
import os

from .errors import UserError
from .runtime_packages import require_package

BACKENDS = ("auto", "onnxruntime", "torch")
DEVICES = ("auto", "cpu", "cuda")


def available_cores() -> int:
    """The cores this process may use (the affinity mask, which a container may restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def first_line(exc: BaseException) -> str:
    """The gist of a runtime error, whose full text can run to pages of C++ context."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


class Backend:
    """What the engine sees: `name`, `device`, `messages`, `run()`, `close()`.

    Subclasses provide `_infer(s2, s1)` and `_move_to_cpu()`.
    """
    name = ""

    def __init__(self):
        self.device = "cpu"
        self.messages = []

    def run(self, s2, s1):
        """(restored, gate) for one batch of normalised S2 and S1 tiles.

        Any failure on the GPU (out of memory, a driver or CUDA error: the runtimes report these
        with generic exception types and version-dependent text) moves the model to the CPU and
        reruns the batch. Nothing is masked: an error that is not the GPU's recurs on the CPU and
        propagates from there.
        """
        try:
            return self._infer(s2, s1)
        except Exception as exc:
            if self.device != "cuda":
                raise
            self.messages.append(f"The GPU failed during inference ({first_line(exc)}); "
                                 f"continuing on the CPU.")
            self._move_to_cpu()
            self.device = "cpu"
            return self._infer(s2, s1)

    def close(self):
        """Release the model and its (GPU) memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _infer(self, s2, s1):
        raise NotImplementedError

    def _move_to_cpu(self):
        raise NotImplementedError


def _onnxruntime_imports() -> bool:
    try:
        require_package("onnxruntime")
    except UserError:
        return False
    return True


def create_backend(files, spec, backend: str = "auto", device: str = "auto",
                   threads: int = None) -> Backend:
    """Open `files` (a ModelFiles) with the chosen runtime on the chosen device.

    `auto` prefers ONNX Runtime, which is lighter and faster on the CPU, and falls back to torch
    when the model has no ONNX file or onnxruntime is missing. `threads` None uses every core.
    """
    if backend not in BACKENDS:
        raise UserError(f"Unknown backend '{backend}'; use one of {', '.join(BACKENDS)}.")
    if device not in DEVICES:
        raise UserError(f"Unknown device '{device}'; use one of {', '.join(DEVICES)}.")
    if threads is not None and threads < 1:
        raise UserError(f"The thread count must be at least 1, not {threads}.")
    if backend == "auto":
        use_onnx = files.onnx_path is not None and (
            files.torch_path is None or _onnxruntime_imports())
        backend = "onnxruntime" if use_onnx else "torch"
    if backend == "onnxruntime":
        if files.onnx_path is None:
            raise UserError(f"The model '{files.name}' has no ONNX file; export one with "
                            f"`sar-cloud-removal export` or use the torch backend.")
        from .backend_onnx import OnnxRuntimeBackend
        return OnnxRuntimeBackend(files.onnx_path, spec, device, threads or available_cores())
    if files.torch_path is None:
        raise UserError(f"The model '{files.name}' has no torch checkpoint (.pt); use the "
                        f"onnxruntime backend.")
    from .backend_torch import TorchBackend
    return TorchBackend(files.torch_path, spec, device, threads or available_cores())
