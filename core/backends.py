"""Choosing and running an inference backend (ONNX Runtime or torch) for a model.

Both backends take and return float32 NCHW numpy arrays, so the engine is the same whichever runs.
A GPU is used when asked for (or on `auto`) and it works; otherwise, and when the GPU fails in
the middle of a run, the backend continues on the CPU and records why in `messages`, because an
analyst would rather wait longer than lose the run. The runtimes are imported only when a backend
is created: the plugin must load without them.
"""
from .backend_base import Backend, available_cores, first_line  # noqa: F401 (re-exported)
from .errors import UserError
from .runtime_packages import require_package

BACKENDS = ("auto", "onnxruntime", "torch")
DEVICES = ("auto", "cpu", "cuda")


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
