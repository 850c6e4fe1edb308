"""Running a model with torch: for checkpoints not (yet) exported to ONNX, and for GPUs where
only torch has CUDA."""
import numpy as np

from .backend_base import Backend, first_line
from .errors import UserError
from .model_spec import check_same_spec, read_checkpoint
from .runtime_packages import require_package


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path, spec, device: str, threads: int):
        super().__init__()
        self._torch = torch = require_package("torch")
        from ..models.registry import build, load_weights

        checkpoint = read_checkpoint(path)
        check_same_spec(spec, checkpoint["spec"], path)
        network = build(spec.architecture, **spec.config)
        load_weights(network, checkpoint["state_dict"], path, spec.architecture)
        network_multiple = getattr(network, "size_multiple", 1)
        if spec.size_multiple % network_multiple:
            raise UserError(f"The spec in {path} gives size_multiple {spec.size_multiple} but its "
                            f"{spec.architecture} network needs multiples of {network_multiple}; "
                            f"re-export it.")
        self._network = network.eval()
        self._target = torch.device("cpu")
        torch.set_num_threads(threads)
        if device != "cpu" and torch.cuda.is_available():
            try:
                self._network.to("cuda")
                self._target = torch.device("cuda")
                self.device = "cuda"
            except RuntimeError as exc:  # a driver or memory failure while moving the weights
                self._network.to("cpu")
                self.messages.append(f"torch could not use the GPU ({first_line(exc)}), so it "
                                     f"runs on the CPU.")
        elif device == "cuda":
            self.messages.append("CUDA was requested but torch finds no CUDA GPU (install a CUDA "
                                 "build of torch and the NVIDIA driver); running on the CPU.")

    def _infer(self, s2, s1):
        torch = self._torch
        with torch.inference_mode():
            out = self._network(self._tensor(s2), self._tensor(s1))
            return (out.restored.float().cpu().numpy(), out.gate.float().cpu().numpy())

    def _tensor(self, array):
        return self._torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)) \
            .to(self._target)

    def _move_to_cpu(self):
        self._network.to("cpu")
        self._target = self._torch.device("cpu")
        self._free_gpu_memory()

    def close(self):
        self._network = None
        self._free_gpu_memory()

    def _free_gpu_memory(self):
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()
