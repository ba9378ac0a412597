"""The Iris network as an MLServer custom runtime: the benchmark's MLServer peer.

``bench/peer_servers.py`` copies this folder into the benchmark's scratch directory, writes
the served model's ``weights.npz`` beside ``model-settings.json`` and runs ``mlserver start``
on the copy, with ``bench/peers`` on ``PYTHONPATH`` for :mod:`iris_numpy`. The runtime takes
the request our ``/v2/models/iris/infer`` takes (input ``measurements``, FP64 [n, 4]) and
answers the same three outputs: ``probabilities`` FP64 [n, 3], ``class_index`` INT64 [n],
``label`` BYTES [n].
"""

from __future__ import annotations

import numpy as np
from iris_numpy import Weights, load_weights, predict
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri

INPUT = "measurements"


class IrisRuntime(MLModel):
    """Loads ``weights.npz`` once; each request is one NumPy forward pass."""

    weights: Weights

    async def load(self) -> bool:
        self.weights = load_weights(await get_model_uri(self.settings))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = next((i for i in payload.inputs if i.name == INPUT), None)
        if tensor is None:
            raise MLServerError(f"the request has no input {INPUT!r}", status_code=400)
        raw = np.asarray(NumpyCodec.decode_input(tensor), dtype=np.float64)
        n = raw.shape[0]
        o_s, index, labels = predict(self.weights, raw.reshape(n, 4))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                ResponseOutput(
                    name="probabilities", shape=[n, 3], datatype="FP64", data=o_s.ravel().tolist()
                ),
                ResponseOutput(
                    name="class_index", shape=[n], datatype="INT64", data=index.tolist()
                ),
                ResponseOutput(name="label", shape=[n], datatype="BYTES", data=labels),
            ],
        )
