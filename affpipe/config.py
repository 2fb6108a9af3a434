"""Validation of ``workflow_config.yaml`` against the JSON schema in ``affpipe/schemas/``.

The schema is the single source of defaults: :func:`validate_config` fills them in for the whole
config (the Snakefile calls it), and :func:`section_settings` fills them in for one stage's settings
(the CLI calls it), so a stage run by hand behaves like the same stage run by Snakemake.

The schema is split into one file per section (``affpipe/schemas/<section>.schema.yaml``), joined by
``$ref`` from ``config.schema.yaml``.

Values are typed by the schema before they are validated (:func:`coerce`): Snakemake hands nested
``--config`` values over as strings (``--config 'faces={redetect_every: 5}'`` gives ``'5'``), so a
string where the schema allows no string is read the way the same text in workflow_config.yaml
would be (``5`` -> integer, ``1e-3`` -> number, ``true``/``false`` -> boolean, ``null`` -> null).
A string that reads as none of the allowed types is left as is, and the schema refuses it naming
the key and where the value came from.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from affpipe.errors import ConfigError

#: the schema files, shipped inside the package (package data), so an installed affpipe finds them
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ROOT_SCHEMA = "config.schema.yaml"
SCHEMA_SUFFIX = ".schema.yaml"
#: Where a value not set by any override comes from (the Snakefile's `configfile:`).
WORKFLOW_CONFIG = "workflow_config.yaml"
#: Label of the values given with `snakemake --config`.
COMMAND_LINE = "the command line --config"


def _safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, parsed by libyaml where the PyYAML wheel has it (``CSafeLoader``: the
    same safe constructor and resolver, the same values, parsed in C): the schema files are read at
    every DAG build, in every Snakemake process (two per job on SLURM)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=None)
def _retrieve(uri: str) -> Resource:
    """The schema file a ``$ref`` names, read once per process (every validation looks its references up
    again: the whole config, then each dataset's stage sections)."""
    name = uri.rsplit("/", 1)[-1]
    path = SCHEMA_DIR / name
    if not path.is_file():
        raise ConfigError("schema file referenced by $ref not found", path=path)
    contents = dict(load_schema(name))  # a copy: the file's own dict keeps its `$schema`
    # Without its `$schema`, the referenced file is validated by our default-filling validator
    # class; with it, jsonschema would switch to the stock Draft7Validator and skip the defaults.
    contents.pop("$schema", None)
    return Resource.from_contents(contents, default_specification=DRAFT7)


@functools.lru_cache(maxsize=None)
def load_schema(name: str = ROOT_SCHEMA) -> dict[str, Any]:
    """Load one schema file from ``affpipe/schemas/``."""
    path = SCHEMA_DIR / name
    return _safe_load_yaml(path.read_text())


def _extend_with_default(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if prop in instance:
                    continue
                if "default" in subschema:  # also read next to a $ref (draft 7 ignores it otherwise)
                    instance[prop] = copy.deepcopy(subschema["default"])
                elif "$ref" in subschema:
                    resolved = validator._resolver.lookup(subschema["$ref"]).contents
                    if "default" in resolved:
                        instance[prop] = copy.deepcopy(resolved["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _extend_with_default(jsonschema.Draft7Validator)


def _validator(schema_name: str):
    schema = load_schema(schema_name)
    registry = Registry(retrieve=_retrieve)
    return _DefaultFillingValidator(schema, registry=registry)


# --- typing of string values by the schema -----------------------------------------------------
# YAML's spellings (1.1 booleans, as PyYAML reads workflow_config.yaml), plus Python's None/True/False.
_NULLS = frozenset({"", "~", "null", "none"})
_TRUES = frozenset({"true", "yes", "on"})
_FALSES = frozenset({"false", "no", "off"})
_INT_RE = re.compile(r"[-+]?[0-9]+")
_FLOAT_RE = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_UNREADABLE = object()
_COMBINERS = ("anyOf", "oneOf")


def _read_scalar(text: str) -> Any:
    """The value ``text`` stands for as a YAML scalar: None, bool, int or float (else ``_UNREADABLE``)."""
    word = text.strip()
    low = word.lower()
    if low in _NULLS:
        return None
    if low in _TRUES:
        return True
    if low in _FALSES:
        return False
    if _INT_RE.fullmatch(word):
        return int(word)
    if _FLOAT_RE.fullmatch(word):
        return float(word)
    return _UNREADABLE


def _json_types(value: Any) -> tuple[str, ...]:
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("boolean",)
    if isinstance(value, int):
        return ("integer", "number")
    if isinstance(value, float):
        return ("number",)
    if isinstance(value, str):
        return ("string",)
    return ()


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # True == 1 in Python, not in JSON


def _admits(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` (a scalar) passes the type, enum, const and pattern of one schema."""
    types = schema.get("type")
    if types is not None:
        types = (types,) if isinstance(types, str) else tuple(types)
        if not any(t in types for t in _json_types(value)):
            return False
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        return False
    if "const" in schema and not _same(value, schema["const"]):
        return False
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        return False
    return True


def _resolve(schema: Mapping[str, Any], doc: str) -> tuple[Mapping[str, Any], str]:
    """Follow ``$ref`` (a schema file name, optionally with a ``#/...`` pointer) from file ``doc``."""
    while "$ref" in schema:
        ref = schema["$ref"]
        name, _, pointer = ref.partition("#")
        doc = name.rsplit("/", 1)[-1] or doc
        schema = _coercion_schema(doc)
        for part in filter(None, pointer.split("/")):
            schema = schema[part]
    return schema, doc


@functools.lru_cache(maxsize=None)
def _coercion_schema(name: str) -> dict[str, Any]:
    """Schema file ``name`` as :func:`coerce` walks it: an object property named like another
    schema file (e.g. ``datasets.<ds>.faces``, ``experiments.<name>.regression``), declared as a
    bare ``type: object`` because it is merged before it is validated by that file, is read as
    a ``$ref`` to it, so that its values are typed too."""
    schema = copy.deepcopy(load_schema(name))

    def link(node: Any) -> None:
        if isinstance(node, dict):
            for prop, sub in (node.get("properties") or {}).items():
                if (
                    isinstance(sub, dict) and sub.get("type") == "object" and not {"$ref", "properties", "additionalProperties"} & sub.keys()
                    and f"{prop}{SCHEMA_SUFFIX}" != name and (SCHEMA_DIR / f"{prop}{SCHEMA_SUFFIX}").is_file()
                ):
                    sub["$ref"] = f"{prop}{SCHEMA_SUFFIX}"
            for value in node.values():
                link(value)
        elif isinstance(node, list):
            for value in node:
                link(value)

    link(schema)
    return schema


def _alternatives(schema: Mapping[str, Any], doc: str) -> list[tuple[Mapping[str, Any], str]]:
    """``schema`` itself, or one merged schema per branch of its anyOf/oneOf (resolved)."""
    schema, doc = _resolve(schema, doc)
    for combiner in _COMBINERS:
        if combiner in schema:
            base = {k: v for k, v in schema.items() if k not in _COMBINERS}
            out = []
            for branch in schema[combiner]:
                for alt, alt_doc in _alternatives(branch, doc):
                    out.append(({**base, **alt}, alt_doc))
            return out
    return [(schema, doc)]


def _child(schema: Mapping[str, Any], doc: str, key: Any, index: int | None = None):
    """Schema of one object property (``key``) or array item (``index``), or None."""
    for alt, alt_doc in _alternatives(schema, doc):
        for part in [alt, *alt.get("allOf", ())]:
            part, part_doc = _resolve(part, alt_doc)
            if index is not None:
                items = part.get("items")
                if isinstance(items, list):
                    items = items[index] if index < len(items) else part.get("additionalItems")
                if isinstance(items, dict):
                    return items, part_doc
                continue
            props = part.get("properties") or {}
            if key in props:
                return props[key], part_doc
            for pattern, sub in (part.get("patternProperties") or {}).items():
                if re.search(pattern, str(key)):
                    return sub, part_doc
            extra = part.get("additionalProperties")
            if isinstance(extra, dict):
                return extra, part_doc
    return None


def _coerce(value: Any, schema: Mapping[str, Any], doc: str) -> Any:
    if isinstance(value, str):
        alts = _alternatives(schema, doc)
        if any(_admits(alt, value) for alt, _ in alts):
            return value
        read = _read_scalar(value)
        if read is not _UNREADABLE and any(_admits(alt, read) for alt, _ in alts):
            return read
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            child = _child(schema, doc, key)
            if child is not None:
                new = _coerce(item, *child)
                if new is not item:
                    value[key] = new
        return value
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            child = _child(schema, doc, None, index=i)
            out.append(item if child is None else _coerce(item, *child))
        # a new list only if something changed: lists may be shared with Snakemake's own copy
        return out if any(a is not b for a, b in zip(out, value)) else value
    return value


def coerce(instance: Any, schema_name: str = ROOT_SCHEMA) -> Any:
    """Type the string values of ``instance`` by schema file ``schema_name`` (dicts in place).

    A string stays a string wherever the schema admits it (type string, and its enum/pattern).
    Elsewhere it is read as a YAML scalar -- ``null``/``~``/``None``, ``true``/``false`` (also
    ``yes``/``no``/``on``/``off``, any case), an integer (``5``) or a number (``5.0``, ``1e-3``) --
    and replaced when that value has a type the schema allows there (an integer place never takes
    ``5.5`` or ``5.0``). Strings that read as no allowed type are left for the schema to refuse.
    Per-dataset stage sections (``datasets.<ds>.<section>``) and experiment overrides
    (``experiments.<name>.regression``) are typed by their section's schema.

    Returns
    -------
    The coerced instance (the same object for a dict).
    """
    return _coerce(instance, _coercion_schema(schema_name), schema_name)


# --- validation ---------------------------------------------------------------------------------
#: A configuration layer: its label (e.g. "--configfile cpu.yaml") and its values, or the file to load them from.
Layer = tuple[str, Mapping[str, Any] | str | os.PathLike]


def _error_path(err: jsonschema.ValidationError) -> tuple:
    """Key path of the value an error is about (an unexpected property: that property)."""
    path = tuple(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = err.schema.get("properties") or {}
        patterns = err.schema.get("patternProperties") or {}
        extra = [k for k in err.instance if k not in known and not any(re.search(p, k) for p in patterns)]
        if extra:
            path += (extra[0],)
    return path


def _dotted(prefix: str, path: Sequence[Any]) -> str:
    where = ".".join(str(p) for p in path)
    return f"{prefix}.{where}" if prefix and where else (prefix or where or "<top level>")


def _format_error(
    err: jsonschema.ValidationError,
    prefix: str,
    origin: Callable[[tuple], str | None] | None = None,
    key_of: Callable[[tuple], str] | None = None,
) -> str:
    path = tuple(err.absolute_path)
    key = key_of(path) if key_of else _dotted(prefix, path)
    label = origin(_error_path(err)) if origin else None
    src = f" (from {label})" if label else ""
    return f"config key `{key}`{src}: {err.message}"


def validate(
    instance: dict[str, Any],
    schema_name: str,
    *,
    prefix: str = "",
    source: str | None = None,
    origin: Callable[[tuple], str | None] | None = None,
    key_of: Callable[[tuple], str] | None = None,
) -> dict[str, Any]:
    """Type string values by the schema (:func:`coerce`), then validate ``instance`` in place
    against one schema file, filling in defaults.

    Parameters
    ----------
    origin : callable, optional
        Maps the key path of an invalid value (relative to ``instance``) to where it was set
        (e.g. "the command line --config"); named in the message.
    key_of : callable, optional
        Maps that key path to the dotted key the message names (default: ``prefix`` + the path).

    Raises
    ------
    ConfigError
        Listing every violation, each naming the dotted config key.
    """
    coerce(instance, schema_name)
    validator = _validator(schema_name)
    # Two passes: the first fills defaults (which may create nested objects whose own defaults the
    # second pass then fills), the second reports errors on the completed instance.
    for _ in validator.iter_errors(instance):
        pass
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "; ".join(_format_error(e, prefix, origin, key_of) for e in errors)
        raise ConfigError(f"invalid configuration: {lines}", path=source)
    return instance


#: Validated settings by (schema file, ``repr`` of the settings as given): each distinct content is
#: validated once per process. The workflow validates every dataset's stage sections, then builds
#: each job's settings from the same content; a command validates its --settings once, and the
#: library functions it calls with them (e.g. per video) hit this cache. Only successes are kept.
_VALIDATED: dict[tuple[str, str], dict[str, Any]] = {}


def validated_copy(settings: Mapping[str, Any] | None, schema_name: str, **kwargs: Any) -> dict[str, Any]:
    """A validated, default-filled copy of ``settings`` (see :func:`validate`, which takes the same
    keyword arguments for its messages); ``settings`` itself is not changed.

    Validated once per distinct content (and key order) and process: later calls return a fresh copy
    of the first result, which is what validating again would give.
    """
    settings = settings or {}
    key = (schema_name, repr(settings))
    done = _VALIDATED.get(key)
    if done is None:
        done = _VALIDATED[key] = validate(copy.deepcopy(dict(settings)), schema_name, **kwargs)
    return copy.deepcopy(done)


def _lookup(tree: Any, path: Sequence[Any]) -> bool:
    """Whether ``tree`` holds a value at key path ``path``."""
    for part in path:
        if isinstance(tree, Mapping) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and isinstance(part, int) and part < len(tree):
            tree = tree[part]
        else:
            return False
    return True


def _shown(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies inside it, else as it is."""
    rel = os.path.relpath(path)
    return os.fspath(path) if rel.startswith("..") else rel


class _Origins:
    """Where each config value was set: the last layer (Snakemake's merge order: the workflow's
    configfile, then every --configfile in order, then --config) holding its key path."""

    def __init__(self, base: str, layers: Sequence[Layer]):
        self.base = base
        self.layers = list(layers)
        self._loaded: dict[int, Any] = {}

    def _data(self, i: int) -> Any:
        if i not in self._loaded:
            data = self.layers[i][1]
            if not isinstance(data, Mapping):  # a file: loaded only when an error is reported
                data = yaml.safe_load(Path(data).read_text()) or {}
            self._loaded[i] = data
        return self._loaded[i]

    def __call__(self, path: Sequence[Any]) -> str:
        for i in reversed(range(len(self.layers))):
            if _lookup(self._data(i), path):
                return self.layers[i][0]
        return self.base


def snakemake_layers(workflow: Any) -> list[Layer]:
    """The configuration layers of a Snakemake 9 workflow over its `configfile:`: every
    ``--configfile`` (in order), then the ``--config`` values."""
    settings = workflow.config_settings
    layers: list[Layer] = [(f"--configfile {_shown(p)}", p) for p in settings.configfiles]
    if settings.config:
        layers.append((COMMAND_LINE, dict(settings.config)))
    return layers


def validate_config(
    config: dict[str, Any],
    *,
    source: str | None = WORKFLOW_CONFIG,
    layers: Sequence[Layer] = (),
) -> dict[str, Any]:
    """Type, validate and fill in defaults of the whole workflow config in place.

    Also validates each dataset's stage sections (``datasets.<ds>.<section>`` merged over the
    global ``<section>``, as the workflow uses them), so an invalid override is named with its own key.

    Parameters
    ----------
    source : str, optional
        Where values not set by ``layers`` come from (the workflow's configfile).
    layers : sequence of (label, mapping or path)
        The overrides merged over ``source``, in Snakemake's order (later wins): each invalid value
        is reported with the label of the last layer that sets it, e.g. "config key
        `faces.redetect_every` (from the command line --config): 'x' is not of type 'integer'".
    """
    origin = _Origins(source or WORKFLOW_CONFIG, layers)
    validate(config, ROOT_SCHEMA, origin=origin)
    for ds, entry in (config.get("datasets") or {}).items():
        for section in _dataset_sections():
            if entry.get(section):
                _validate_dataset_section(config, ds, section, origin)
    return config


def _validate_dataset_section(config: dict[str, Any], ds: str, section: str, origin: _Origins) -> None:
    """Validate ``datasets.<ds>.<section>`` merged over the global ``<section>`` (a copy). Keys the
    dataset sets are named ``datasets.<ds>.<section>.<key>``, the global ones ``<section>.<key>``."""
    override = config["datasets"][ds][section]
    merged = {**(config.get(section) or {}), **override}  # as the workflow merges them (a cache hit there)

    def full_path(path: tuple) -> tuple:
        return ("datasets", ds, section, *path) if path and path[0] in override else (section, *path)

    def key_of(path: tuple) -> str:
        return _dotted("", full_path(path)) if path else f"datasets.{ds}.{section}"

    try:
        validated_copy(merged, f"{section}{SCHEMA_SUFFIX}", origin=lambda path: origin(full_path(path)), key_of=key_of)
    except ConfigError as err:
        raise ConfigError(err.cause.replace("invalid configuration:", f"invalid configuration of dataset `{ds}`:", 1)) from None


@functools.lru_cache(maxsize=None)
def _dataset_sections() -> tuple[str, ...]:
    """Stage sections a dataset entry may override (properties of dataset.schema.yaml with their own schema file)."""
    props = load_schema("dataset.schema.yaml").get("properties") or {}
    return tuple(p for p in props if (SCHEMA_DIR / f"{p}{SCHEMA_SUFFIX}").is_file())


def section_settings(section: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of one stage's settings (``affpipe/schemas/<section>.schema.yaml``) merged with ``settings``
    (a validated copy; validated once per distinct content and process, :func:`validated_copy`)."""
    return validated_copy(settings, f"{section}{SCHEMA_SUFFIX}", prefix=section)
