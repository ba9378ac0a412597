"""Safe rollout and monitoring: a canary and a shadow beside the stable version, feedback,
drift of the inputs, and the rule that promotes or rolls back a canary by itself.

- :mod:`~service.rollout.plan`: the routing plan (canary, shadow, revision) and routing keys;
- :mod:`~service.rollout.store`: the shared state (plan, history, counts, recent rows) in
  SQLite or PostgreSQL;
- :mod:`~service.rollout.traffic`: one worker's choice of version and its tallies, flushed in
  batches, and the shadow computed off the requests' path;
- :mod:`~service.rollout.control`: routing set by hand, feedback, the rule, the figures.
"""
