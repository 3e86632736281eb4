"""``vigo-envoy``: the envoy agent (register, run) and the load simulator (``sim/``)."""
