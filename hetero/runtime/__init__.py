"""The runtime: Core, CompiledModel, InferRequest, AsyncInferQueue, profiling."""
from .compiled import CompiledModel, Port
from .core import Core, compile_model, default_core
from .request import AsyncInferQueue, InferRequest, InferResults, ProfilingInfo

__all__ = ["Core", "CompiledModel", "Port", "InferRequest", "InferResults", "AsyncInferQueue",
           "ProfilingInfo", "compile_model", "default_core"]
