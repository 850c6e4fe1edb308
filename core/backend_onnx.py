"""Running a model with ONNX Runtime (the default backend: no torch needed at inference)."""
from .backend_base import Backend, first_line
from .errors import UserError
from .runtime_packages import require_package

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
INPUT_CHANNELS = {"s2": 13, "s1": 2}
OUTPUT_CHANNELS = {"restored": 13, "gate": 1}
# Whether idle intra-op threads spin, waiting for work, rather than sleep. Spinning threads
# take the cores the engine's reader and writer threads need beside inference, and each
# parallel step then waits for a descheduled thread: a 4 MP run on 2 cores took 7.2 s
# spinning and 5.1 s without.
SPIN = False


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path, spec, device: str, threads: int):
        super().__init__()
        self._ort = require_package("onnxruntime", "onnxruntime (or onnxruntime-gpu for GPUs)")
        self._path, self._spec, self._threads = path, spec, threads
        self._session = None
        if device != "cpu" and CUDA_PROVIDER in self._ort.get_available_providers():
            self._open_on_gpu()
        else:
            if device == "cuda":
                self.messages.append("CUDA was requested but this ONNX Runtime has no CUDA "
                                     "support (install onnxruntime-gpu); running on the CPU.")
            self._session = self._open([CPU_PROVIDER])
        self._check_tensors()
        self._feed_names = (spec.inputs["s2"], spec.inputs["s1"])
        self._output_names = [spec.outputs["restored"], spec.outputs["gate"]]

    def _open_on_gpu(self):
        """Open on CUDA, or on the CPU when the CUDA provider is listed but cannot start.

        ONNX Runtime lists the CUDA provider whenever onnxruntime-gpu is installed, yet without a
        working driver, CUDA or cuDNN it either raises or silently drops to the CPU; only the
        providers of the opened session tell the truth.
        """
        try:
            self._session = self._open([CUDA_PROVIDER, CPU_PROVIDER])
        except UserError as exc:
            reason = first_line(exc.__cause__)
        else:
            if CUDA_PROVIDER in self._session.get_providers():
                self.device = "cuda"
                return
            reason = "the CUDA provider did not initialise"
        self.messages.append(f"ONNX Runtime could not use the GPU ({reason}), so it runs on the "
                             f"CPU; check the NVIDIA driver and the CUDA and cuDNN libraries.")
        self._session = self._open([CPU_PROVIDER])

    def _open(self, providers):
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: warnings would reach the analyst's console
        if not SPIN:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self._path), sess_options=options, providers=providers)
        except Exception as exc:  # ONNX Runtime's error types share no narrower base
            raise UserError(f"ONNX Runtime cannot open the model file {self._path} "
                            f"({first_line(exc)}); replace or re-export it.") from exc

    def _check_tensors(self):
        """Refuse a graph whose tensors differ from its spec before a tile is computed."""
        for kind, declared, wanted in (
                ("input", self._session.get_inputs(), INPUT_CHANNELS),
                ("output", self._session.get_outputs(), OUTPUT_CHANNELS)):
            by_name = {arg.name: arg for arg in declared}
            roles = self._spec.inputs if kind == "input" else self._spec.outputs
            for role, channels in wanted.items():
                arg = by_name.get(roles[role])
                if arg is None:
                    raise UserError(
                        f"The model file {self._path} has no {kind} '{roles[role]}' (it has "
                        f"{', '.join(sorted(by_name))}); re-export it with a matching spec.")
                shape = arg.shape
                if (arg.type != "tensor(float)" or len(shape) != 4
                        or (isinstance(shape[1], int) and shape[1] != channels)):
                    raise UserError(
                        f"The model file {self._path} declares {kind} '{arg.name}' as "
                        f"{arg.type} {shape} but the engine needs float32 N×{channels}×H×W; "
                        f"re-export it.")
        if len(self._session.get_inputs()) != len(INPUT_CHANNELS):
            raise UserError(f"The model file {self._path} takes "
                            f"{len(self._session.get_inputs())} inputs but the engine feeds "
                            f"only S2 and S1; re-export it.")

    def _infer(self, s2, s1):
        s2_name, s1_name = self._feed_names
        restored, gate = self._session.run(self._output_names, {s2_name: s2, s1_name: s1})
        return restored, gate

    def _move_to_cpu(self):
        self._session = self._open([CPU_PROVIDER])

    def close(self):
        self._session = None
