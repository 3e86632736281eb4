"""Finding and reading server.yaml, then handing it to the schema.

The file is found (``--config``, else ``$VIGO_CONFIG_FILE``, else ``./server.yaml``,
else built-in defaults) and parsed with ``yaml.safe_load``; ``--mode`` and
``--data-dir`` from the command line override what the file says before
``vigo.config.schema`` validates it.
"""

import os

import yaml

from vigo.config import checks as check
from vigo.config.schema import _MODES, config_from_mapping
from vigo.config.sections import ConfigError, _Section


def find_config_file(explicit=None, environ=os.environ, cwd=None):
    """Return the config file to load, or None for built-in defaults.

    ``explicit`` (``--config``) wins, then ``$VIGO_CONFIG_FILE``; either must name an
    existing file.  Otherwise ``server.yaml`` in ``cwd`` is used if it exists.
    """
    def under_cwd(path):
        return path if cwd is None else os.path.join(cwd, path)

    env = environ.get("VIGO_CONFIG_FILE") or None  # set but empty counts as unset
    for option, path in (("--config", explicit), ("$VIGO_CONFIG_FILE", env)):
        if path is not None:
            if not os.path.isfile(under_cwd(path)):
                raise ConfigError(
                    f"{option}: {path!r} is not an existing file (name a config file)")
            return under_cwd(path)
    local = under_cwd("server.yaml")
    return local if os.path.isfile(local) else None


def load_config(path=None, *, mode=None, data_dir=None, environ=os.environ, cwd=None):
    """Find, read and validate the config; ``mode`` and ``data_dir`` override the file.

    A relative ``data_dir`` override is taken relative to ``cwd``, where it was typed.
    """
    cwd = os.getcwd() if cwd is None else cwd
    command_line = _Section("command line", "", {}, ())
    if mode is not None:
        mode = command_line.convert("--mode", mode, check.choice(*_MODES))
    if data_dir is not None:
        data_dir = command_line.convert("--data-dir", data_dir, check.path(cwd))
    source = find_config_file(path, environ, cwd)
    data = {} if source is None else _read_yaml(source)
    data = _override(data, "spanner", "mode", mode)
    data = _override(data, "server", "data_dir", data_dir)
    base_dir = cwd if source is None else os.path.dirname(os.path.abspath(source))
    config = config_from_mapping(data, source=source, base_dir=base_dir)
    _check_files(config, source)
    return config


def _check_files(config, source):
    """Refuse a config naming TLS files that are not there, before the server
    writes anything (its identity key, its admin token) or binds a port."""
    tls = config.server.tls
    if tls is None:
        return
    for key, path in (("server.tls.cert_file", tls.cert_file),
                      ("server.tls.key_file", tls.key_file)):
        if not os.path.isfile(path):
            raise ConfigError(f"{source or 'the config'}: {key}: {path} does not exist; give "
                              "the API's certificate and key files, or set server.tls to null "
                              "for a certificate the server makes itself")


def _override(data, section, key, value):
    """Return ``data`` with ``section.key`` set to an already-validated ``value``."""
    data = {} if data is None else data  # an empty file
    inner = data.get(section) if isinstance(data, dict) else None
    if value is None or not isinstance(data, dict) or not isinstance(inner, (dict, type(None))):
        return data  # nothing to override, or a shape config_from_mapping will refuse
    return {**data, section: {**(inner or {}), key: value}}


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to read") from None
    except ValueError as e:
        # PyYAML builds some values with Python's own parsers: an impossible
        # date (2001-13-01), an int of more than 4,300 digits.
        raise ConfigError(f"{path}: a value Python cannot read: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join((getattr(e, "problem", None) or str(e)).split())
        raise ConfigError(f"{path}: {at}YAML syntax error: {problem}") from None
