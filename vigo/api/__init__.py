"""The admin REST API (Klein): ``app`` composed of ``spanner`` (the federation's
routes) and ``page`` (``/spanner``), ``envoys`` (a standalone server's envoy
operations), ``auth`` (API tokens), ``responses`` (JSON answers and errors,
refusal codes to HTTP statuses), ``site`` (bounded request bodies)."""
