"""hetero: run ONNX models across every CPU and OpenCL GPU in a machine.

>>> import hetero
>>> core = hetero.Core()
>>> compiled = core.compile_model("model.onnx", "HETERO:GPU,CPU")   # doctest: +SKIP
>>> result = compiled({"input": x})[0]                                # doctest: +SKIP
"""
__version__ = "0.1.0"

from . import errors
from .errors import (DeviceError, DeviceStringError, HeteroError, InferError, KernelBuildError, ModelError,
                     PartitionError, PropertyError, UnsupportedOpError)
from .ir import Graph, Node, TensorInfo
from .runtime import (AsyncInferQueue, CompiledModel, Core, InferRequest, InferResults, Port, ProfilingInfo,
                      compile_model)


def read_model(model, weights=None) -> Graph:
    """Read an ONNX model (path, bytes or onnx.ModelProto) into hetero's Graph."""
    from .onnx_import import read_model as _read

    return _read(model)


__all__ = ["Core", "CompiledModel", "InferRequest", "InferResults", "AsyncInferQueue", "ProfilingInfo", "Port",
           "compile_model", "read_model", "Graph", "Node", "TensorInfo", "errors", "HeteroError", "ModelError",
           "UnsupportedOpError", "DeviceError", "DeviceStringError", "KernelBuildError", "PartitionError",
           "InferError", "PropertyError", "__version__"]
