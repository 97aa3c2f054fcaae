"""What ``pywatt run`` starts: module specs from the command line or a ``pywatt.toml`` file.

A :class:`ModuleSpec` is everything the host needs to start (and restart, and reload) one
module: its id, its command line, the extra environment, where its secrets come from and
which files to watch for ``--reload``. Specs are built from command-line targets
(:func:`spec_for_target`, :func:`spec_for_command`) or read from a TOML file
(:func:`load_config`, the standard library's ``tomllib``): an optional ``[host]`` table
(``_HOST_KEYS``; command-line options win over it) and one ``[[module]]`` table per module
(``_MODULE_KEYS``: ``target`` or ``command``, ``id``, ``env``, ``secrets``, ``secret_env``,
``secrets_file``, ``watch``), as ``pywatt run --help`` describes.

Relative paths are taken from the config file's directory. Secret values are checked when
read (they must be text: a value that is not valid UTF-8 cannot travel in a JSON line); the
error names the secret and its source, never the value.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._apprunner import split_target

#: A module id: what ``PYWATT_MODULE_ID`` and the stderr prefix carry.
_MODULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Interpreters whose first non-option argument names the module (``python3 mod.py``).
_INTERPRETER = re.compile(r"^(python|pypy|node|deno|bun|ruby|perl|php|bash|sh|lua)[\d.]*$")


class ConfigError(ValueError):
    """A command line or config file that cannot be used; the message says why and where."""


def check_secret(name: str, value: str, source: str) -> None:
    """Raise :class:`ConfigError` unless ``name``/``value`` can be served (valid UTF-8 text).

    The message names the secret and ``source``, never the value.
    """
    if not name:
        raise ConfigError(f"{source}: empty secret name")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{source}: a secret name is not valid UTF-8") from None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{source}: the value of secret {name!r} is not valid UTF-8 text"
        ) from None


def parse_env_file(path: str) -> dict[str, str]:
    """Return NAME=VALUE pairs of a dotenv-style file.

    Blank lines and ``#`` comments are skipped, an ``export`` prefix is allowed, and a value
    in matching single or double quotes is unquoted. Raises ``OSError`` / ``ValueError``
    (:class:`ConfigError` for a malformed line or a value that is not UTF-8; the message
    names the file and line, never a value).
    """
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8 text") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"{path}:{lineno}: expected NAME=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[name] = value
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretSources:
    """Where a module's secrets come from, read again on SIGHUP (later sources win).

    ``files``: dotenv files; ``inline``: NAME=VALUE pairs; ``from_env``: names whose value
    is this host's environment variable of the same name.
    """

    files: tuple[str, ...] = ()
    inline: tuple[tuple[str, str], ...] = ()
    from_env: tuple[str, ...] = ()

    def load(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return the secrets now. Raises ``OSError`` or :class:`ConfigError` (naming the
        secret and its source, never a value)."""
        env = os.environ if environ is None else environ
        out: dict[str, str] = {}
        for path in self.files:
            for name, value in parse_env_file(path).items():
                check_secret(name, value, path)
                out[name] = value
        for name, value in self.inline:
            check_secret(name, value, "--secret")
            out[name] = value
        for name in self.from_env:
            if name not in env:
                raise ConfigError(f"--secret {name}: no environment variable {name} is set")
            check_secret(name, env[name], f"environment variable {name}")
            out[name] = env[name]
        return out

    def merged(self, other: SecretSources) -> SecretSources:
        """Return these sources followed by ``other``'s (``other`` wins on a name)."""
        return SecretSources(
            files=self.files + other.files,
            inline=self.inline + other.inline,
            from_env=self.from_env + other.from_env,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleSpec:
    """One module of the host: how to start it and what it gets.

    ``argv``: the command line (a Python target runs through the app runner); ``target``:
    the Python target it came from, if any; ``env``: variables added to the child's
    environment and sent as the init's ``env``; ``watch``: files and directories
    ``--reload`` polls.
    """

    module_id: str
    argv: tuple[str, ...]
    target: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: SecretSources = SecretSources()
    watch: tuple[str, ...] = ()

    def describe(self) -> str:
        """A short human name: the target, or the command line."""
        return self.target or " ".join(self.argv)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSettings:
    """The ``[host]`` table of a config file (None: not set there)."""

    http: str | None = None
    request_timeout: float | None = None
    shutdown_grace: float | None = None
    restart: str | None = None
    reload: bool | None = None
    extensions: str | None = None


def python_argv(target: str) -> tuple[str, ...]:
    """Return the child command line that runs a Python ``target`` through the app runner."""
    return (sys.executable, "-m", "pywatt_asyncio._apprunner", target)


def _check_id(module_id: str, where: str) -> str:
    if not _MODULE_ID.match(module_id):
        raise ConfigError(
            f"{where}: module id {module_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    return module_id


def default_module_id(target: str | None, argv: Sequence[str]) -> str:
    """Return the id a module gets by default: its file's stem (``notes.py`` -> ``notes``,
    ``pkg.notes:app`` -> ``notes``, ``python3 x/notes.py`` -> ``notes``, ``./bin/notes``
    -> ``notes``), made safe for an id."""
    if target is not None:
        path = split_target(target)[0]
        if path.endswith(".py") or os.sep in path or "/" in path:
            stem = os.path.splitext(os.path.basename(path))[0]
        else:
            stem = path.rsplit(".", 1)[-1]
    else:
        stem = os.path.splitext(os.path.basename(argv[0]))[0] if argv else "module"
        if _INTERPRETER.match(stem):
            for arg in argv[1:]:
                if not arg.startswith("-"):
                    stem = os.path.splitext(os.path.basename(arg))[0]
                    break
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip("._-")[:64]
    return stem or "module"


def _python_watch(target: str) -> tuple[str, ...]:
    path = split_target(target)[0]
    if path.endswith(".py") or os.path.isfile(path):
        return (os.path.dirname(os.path.abspath(path)),)
    return (os.getcwd(),)  # pkg.mod: the importable tree is the working directory


def spec_for_target(
    target: str,
    *,
    module_id: str | None = None,
    env: Mapping[str, str] | None = None,
    secrets: SecretSources = SecretSources(),
    watch: Sequence[str] = (),
) -> ModuleSpec:
    """Return the spec of a Python target (``x.py``, ``x.py:attr``, ``pkg.mod:attr``)."""
    argv = python_argv(target)
    mid = _check_id(module_id or default_module_id(target, argv), target)
    return ModuleSpec(
        module_id=mid,
        argv=argv,
        target=target,
        env=dict(env or {}),
        secrets=secrets,
        watch=tuple(watch) or _python_watch(target),
    )


def spec_for_command(
    argv: Sequence[str],
    *,
    module_id: str | None = None,
    env: Mapping[str, str] | None = None,
    secrets: SecretSources = SecretSources(),
    watch: Sequence[str] = (),
) -> ModuleSpec:
    """Return the spec of a module started as a command line (any language)."""
    mid = _check_id(module_id or default_module_id(None, argv), " ".join(argv))
    files = tuple(os.path.abspath(a) for a in argv if os.path.isfile(a))
    return ModuleSpec(
        module_id=mid,
        argv=tuple(argv),
        env=dict(env or {}),
        secrets=secrets,
        watch=tuple(watch) or files,
    )


def _str_map(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"{where}: expected a table of strings")
    return dict(value)


def _str_list(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a string or a list of strings")
    return list(value)


_MODULE_KEYS = frozenset(
    {"id", "target", "command", "env", "secrets", "secret_env", "secrets_file", "env_file"}
    | {"watch"}
)
#: The ``[host]`` keys (the :class:`HostSettings` fields) and the TOML types each takes.
_HOST_KEYS: dict[str, type | tuple[type, ...]] = {
    "http": str,
    "request_timeout": (int, float),
    "shutdown_grace": (int, float),
    "restart": str,
    "reload": bool,
    "extensions": str,
}


def _module_from_table(table: Mapping[str, Any], base: str, where: str) -> ModuleSpec:
    unknown = sorted(set(table) - _MODULE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")

    def rel(p: str) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(p)))

    env = _str_map(table.get("env", {}), f"{where}.env")
    inline = _str_map(table.get("secrets", {}), f"{where}.secrets")
    for name, value in inline.items():
        check_secret(name, value, f"{where}.secrets")
    sources = SecretSources(
        files=tuple(
            rel(p)
            for key in ("env_file", "secrets_file")  # env_file: the older name, as on the CLI
            for p in _str_list(table.get(key, []), f"{where}.{key}")
        ),
        inline=tuple(inline.items()),
        from_env=tuple(_str_list(table.get("secret_env", []), f"{where}.secret_env")),
    )
    watch = [rel(p) for p in _str_list(table.get("watch", []), f"{where}.watch")]
    mid = table.get("id")
    if mid is not None and not isinstance(mid, str):
        raise ConfigError(f"{where}.id: expected a string")
    target, command = table.get("target"), table.get("command")
    if (target is None) == (command is None):
        raise ConfigError(f"{where}: give exactly one of 'target' and 'command'")
    if target is not None:
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{where}.target: expected a non-empty string")
        path, attr = split_target(target)
        if path.endswith(".py") or os.path.exists(os.path.join(base, path)):
            target = rel(path) + (":" + attr if attr else "")
        return spec_for_target(target, module_id=mid, env=env, secrets=sources, watch=watch)
    argv = _str_list(command, f"{where}.command")
    if not argv:
        raise ConfigError(f"{where}.command: expected a non-empty command line")
    if "/" in argv[0] and not os.path.isabs(argv[0]):
        argv[0] = rel(argv[0])
    argv = [argv[0], *(rel(a) if os.path.exists(os.path.join(base, a)) else a for a in argv[1:])]
    return spec_for_command(argv, module_id=mid, env=env, secrets=sources, watch=watch)


def load_config(path: str) -> tuple[HostSettings, list[ModuleSpec]]:
    """Read a ``pywatt.toml`` file: the ``[host]`` settings and the ``[[module]]`` specs.

    Raises ``OSError`` or :class:`ConfigError` (file, table and key named).
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    base = os.path.dirname(os.path.abspath(path))
    host = data.pop("host", {})
    modules = data.pop("module", [])
    if data:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(sorted(data))}")
    if not isinstance(host, dict):
        raise ConfigError(f"{path}: [host] must be a table")
    unknown = sorted(set(host) - _HOST_KEYS.keys())
    if unknown:
        raise ConfigError(f"{path}: [host]: unknown key(s) {', '.join(unknown)}")
    if not isinstance(modules, list) or not modules:
        raise ConfigError(f"{path}: no [[module]] tables")
    specs: list[ModuleSpec] = []
    for i, table in enumerate(modules):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: module[{i}] must be a table")
        specs.append(_module_from_table(table, base, f"{path}: module[{i}]"))
    for key, kind in _HOST_KEYS.items():
        if key in host and not isinstance(host[key], kind):
            raise ConfigError(f"{path}: [host].{key} has the wrong type")
    if host.get("restart", "no") not in ("no", "on-failure"):
        raise ConfigError(f"{path}: [host].restart must be 'no' or 'on-failure'")
    return HostSettings(**host), specs
