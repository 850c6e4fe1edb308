"""What every inference backend shares: the `Backend` base class (the engine's view of a runtime,
with the move to the CPU when the GPU fails) and small helpers.

`backends.py` (choosing a backend) and the two backends (`backend_onnx.py`, `backend_torch.py`)
all import from here, so imports only go one way: backends -> backend_onnx/backend_torch ->
backend_base.
"""
import os


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
