"""``vigo-envoy sim``: many envoys in one process (``simulator``), where they
connect from (``dialer``), one simulated envoy (``envoy``), and what a run
counts and reports (``figures``, ``latency``)."""
