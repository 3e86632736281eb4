"""Hostcrates: which bundle an envoy gets, by hostname pattern.

An optional YAML file holds a list of entries, each with a ``match`` glob and
whatever the envoys matching it should be told (environment, roles, vars). The
first entry that matches an envoy's hostname wins; its resolved document plus a
version hash is the envoy's *bundle*. Envoys report the version they have
applied, which is what makes the no-change short-circuit one comparison.
"""

import fnmatch
import hashlib
import json

import attr
import yaml

MAX_BUNDLE_BYTES = 1024 * 1024


class HostcratesError(Exception):
    """The hostcrates file is unreadable or malformed; the message says where."""


def canonical(document):
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


@attr.s(frozen=True, slots=True)
class Bundle:
    """A resolved document, its canonical bytes and their SHA-256 version."""

    document = attr.ib()
    encoded = attr.ib(repr=False)
    version = attr.ib()

    @classmethod
    def of(cls, document):
        encoded = canonical(document)
        return cls(document, encoded, hashlib.sha256(encoded).digest())


DEFAULT_BUNDLE = Bundle.of({"hostcrate": None, "environment": "default"})


@attr.s(frozen=True)
class Hostcrate:
    match = attr.ib()
    bundle = attr.ib()


class Hostcrates:
    """The ordered hostcrate entries; ``bundle_for`` is first-match-wins."""

    def __init__(self, entries=(), source=None):
        self.entries = tuple(entries)
        self.source = source

    @classmethod
    def load(cls, path):
        """The hostcrates of the file ``path`` (``hostcrates:`` in the config),
        or none (every envoy gets the default bundle) when ``path`` is None."""
        return cls() if path is None else cls.from_file(path)

    def same_as(self, other):
        """True if ``other`` gives every hostname the bundle this one does."""
        return self.entries == other.entries

    @classmethod
    def from_file(cls, path):
        try:
            with open(path, "rb") as f:
                data = yaml.safe_load(f)
        except OSError as e:
            raise HostcratesError("hostcrates %s: %s" % (path, e.strerror)) from None
        except yaml.YAMLError as e:
            raise HostcratesError("hostcrates %s: not valid YAML: %s" % (path, e)) from None
        return cls.from_data(data, source=path)

    @classmethod
    def from_data(cls, data, source="hostcrates"):
        if data is None:
            return cls((), source)
        if not isinstance(data, list):
            raise HostcratesError(
                "%s: must be a list of entries with a 'match' glob" % (source,)
            )
        entries = []
        for n, entry in enumerate(data, 1):
            if not isinstance(entry, dict):
                raise HostcratesError("%s: entry %d is not a mapping" % (source, n))
            match = entry.get("match")
            if not isinstance(match, str) or not match.strip():
                raise HostcratesError(
                    "%s: entry %d needs 'match', a hostname glob such as "
                    "'*.dc1.example.com'" % (source, n)
                )
            document = {k: v for k, v in entry.items() if k != "match"}
            document["hostcrate"] = match.lower()
            try:
                bundle = Bundle.of(document)
            except (TypeError, ValueError) as e:
                raise HostcratesError("%s: entry %d: %s" % (source, n, e)) from None
            if len(bundle.encoded) > MAX_BUNDLE_BYTES:
                raise HostcratesError("%s: entry %d is over 1 MiB" % (source, n))
            entries.append(Hostcrate(match.lower(), bundle))
        return cls(entries, source)

    def bundle_for(self, hostname):
        """The bundle of the first entry matching ``hostname``, else the default."""
        for entry in self.entries:
            if fnmatch.fnmatchcase(hostname, entry.match):
                return entry.bundle
        return DEFAULT_BUNDLE
