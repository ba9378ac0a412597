"""The native API's routers, one per resource; /v2 is service.v2's."""
