"""JSON documents in tests: every path into one, and a copy with one value replaced."""

import copy


def json_paths(value, path=()):
    """Every path (a tuple of keys and indexes) to a value inside a JSON
    document, the document itself (``()``) first."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, path + (index,))


def replaced(document, path, value):
    """A deep copy of ``document`` with the value at ``path`` replaced by ``value``."""
    if not path:
        return value
    document = copy.deepcopy(document)
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return document
