"""Importing the heavy runtimes (onnx, onnxruntime, torch) only when a run needs them.

The plugin must load and show its dialogs without them, and an analyst who lacks one needs to be
told which package to install rather than shown an ImportError.
"""
import importlib

from .errors import UserError


def require_package(module: str, install_hint: str = None):
    """The imported module, or a UserError naming what to install (`install_hint` or `module`)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"The Python package '{module}' is not installed; install "
                        f"{install_hint or module} in the Python environment QGIS uses.") from exc
