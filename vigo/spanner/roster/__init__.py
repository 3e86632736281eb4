"""The admissions roster: who the bolts are, as a state-based CRDT of signed records.

``rows`` (admission rows) and ``records`` (removals, consumed join tokens,
envoy overrides) are the signed pieces; ``crdt`` is the ``Roster`` that merges
them; ``parts`` its plain-data form and digest; ``hlc`` the hybrid clock that
orders overrides; ``snapshot`` the signed snapshots bolts serve and pull;
``store`` its persistence; ``local`` this bolt's copy, through which every
change goes.
"""
