"""The Iris network on KServe's Python model server: the benchmark's KServe peer.

``python kserve_iris.py --weights weights.npz --http_port PORT [--enable_grpc false] ...``
runs in a virtualenv with ``kserve`` installed and ``bench/peers`` on ``PYTHONPATH`` (for
:mod:`iris_numpy`); every option of ``kserve.model_server.parser`` applies. The model,
``iris``, answers the Open Inference Protocol request our ``/v2/models/iris/infer`` takes
(input ``measurements``, FP64 [n, 4]) with the same three outputs: ``probabilities`` FP64
[n, 3], ``class_index`` INT64 [n], ``label`` BYTES [n].
"""

from __future__ import annotations

import argparse
from typing import Any

import kserve
import numpy as np
from iris_numpy import Weights, load_weights, predict
from kserve.errors import InvalidInput

INPUT = "measurements"


class IrisModel(kserve.Model):  # type: ignore[misc]
    """Loads ``weights.npz`` once; each request is one NumPy forward pass."""

    def __init__(self, name: str, weights_path: str) -> None:
        super().__init__(name)
        self.weights_path = weights_path
        self.weights: Weights | None = None

    def load(self) -> bool:
        self.weights = load_weights(self.weights_path)
        self.ready = True
        return self.ready

    async def predict(
        self,
        payload: kserve.InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> kserve.InferResponse:
        if self.weights is None:
            raise InvalidInput("the model is not loaded")
        tensor = next((i for i in payload.inputs if i.name == INPUT), None)
        if tensor is None:
            raise InvalidInput(f"the request has no input {INPUT!r}")
        raw = np.asarray(tensor.as_numpy(), dtype=np.float64)
        n = raw.shape[0]
        o_s, index, labels = predict(self.weights, raw.reshape(n, 4))
        outputs = [
            kserve.InferOutput("probabilities", [n, 3], "FP64", data=o_s),
            kserve.InferOutput("class_index", [n], "INT64", data=index),
            kserve.InferOutput("label", [n], "BYTES", data=np.array(labels, dtype=np.object_)),
        ]
        return kserve.InferResponse(
            response_id=payload.id or "", model_name=self.name, infer_outputs=outputs
        )


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--weights", required=True, help="weights.npz of the served model")
    args: Any = parser.parse_args()
    model = IrisModel(args.model_name or "iris", args.weights)
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
