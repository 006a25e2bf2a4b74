"""The flags that choose where the model runs and with how many threads, shared by edge, cloud, demo and eval
(splitinfer.runtimes.check_runtime_flags checks them before torch loads)."""

from __future__ import annotations

from splitinfer.runtimes import RUNTIMES
from splitinfer.settings import Option

OPTIONS = [
    Option("runtime", "What runs the model: torch (eager), onnxruntime or openvino (the graphs are exported to ONNX "
           "once per cut and cached; pip install 'splitinfer[onnxruntime]' or 'splitinfer[openvino]').",
           default="torch", choices=RUNTIMES),
    Option("threads", "Threads per model call (0: the CPUs this process may use, less one for gRPC and the codec, "
           "shared by the calls that run at once).", cast=int, default=0),
]

