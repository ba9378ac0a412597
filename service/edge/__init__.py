"""The app's edge: what every request passes before FastAPI's own stack, one concern a layer.

The app factory (service/main.py, ``edge``) composes them around FastAPI's own middleware
stack (and inside the access log, when it is on), outermost first:

1. :class:`~service.edge.request_metrics.RequestMetrics`: every request counted by route,
   method and status, with its latency.
2. :class:`~service.edge.limits.Limits`: admission (IRIS_MAX_CONNECTIONS requests in
   progress) and the body's bounds (size, the body budget); the body is read here, whole,
   before anything parses it.
3. :class:`~service.edge.dispatch.HotRouteDispatch`: the hot routes (/predict, /gradients,
   /v2 infer), answered from the table the app factory builds (service/routing.py), before
   FastAPI's routing, dependency resolution and exception handlers, which cost more than the
   model on a one-row request (docs/performance.md). Everything else goes on to FastAPI.
"""

from service.edge.dispatch import HotRouteDispatch
from service.edge.limits import Limits, late_body
from service.edge.request_metrics import RequestMetrics

__all__ = ["HotRouteDispatch", "Limits", "RequestMetrics", "late_body"]
