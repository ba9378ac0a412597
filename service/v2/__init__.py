"""The Open Inference Protocol (KServe v2) REST endpoints, beside the native API.

The protocol is kserve/open-inference-protocol, ``specification/protocol/inference_rest.md``.
This server has one model, ``iris``, whose versions are the stored version ids::

    input   measurements   FP64 (FP32 accepted)  [-1, 4]   centimetres, as in /predict
    output  probabilities  FP64                  [-1, 3]   setosa, versicolor, virginica
    output  class_index    INT64                 [-1]
    output  label          BYTES                 [-1]      the species name

Every error is ``{"error": "..."}``, as the protocol asks, never a problem document: the
routes use ``ProtocolRoute``, which answers for them before the app's handlers could.
Bodies are parsed whatever their Content-Type says, because tritonclient sends none.

- protocol.py: the names (model, tensors, datatypes, refused extensions)
- errors.py: the error object and the mapping of exceptions to it
- schema.py: the request, declared once (msgspec structs), and its OpenAPI schema
- decode.py: the request's bytes to rows, outputs and id, or a 400 naming the problem
- routes.py: the routes, and the hot route of inference
"""

from service.v2.routes import INFER_ROUTES, router
from service.v2.schema import request_schemas

__all__ = ["INFER_ROUTES", "request_schemas", "router"]
