"""The platform's one YAML configuration file: its schema, validation and loading.

Everything a user changes without touching code lives here: the warehouse, the landing folder, the
sources and how their fields map onto canonical person and event fields, identity rules, segments and
destinations. The file is validated when the Dagster definitions load, so a typo fails fast with the
offending key named instead of surfacing as a wrong number three stages later.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from resources.config.base import (
    _Strict,
)
from resources.config.collector import CollectorConfig
from resources.config.destinations import (
    DestinationConfig,
    FileDestinationConfig,
    HashedAudienceDestinationConfig,
    RowDestinationConfig,
)
from resources.config.identity import (
    IdentityConfig,
    MatchingConfig,
)
from resources.config.overrides import Override, OverrideError, load_overrides
from resources.config.privacy import PrivacyConfig
from resources.config.profiles import (
    SURVIVORSHIP_ATTRIBUTES,
    ProfilesConfig,
    SurvivorshipRule,
    TraitConfig,
)
from resources.config.refresh import AlertsConfig, RefreshConfig
from resources.config.segments import (
    SegmentConfig,
)
from resources.config.sources import (
    COLLECTOR_FOLDER,
    EVENT_FIELDS,
    PERSON_FIELDS,
    FieldSpec,
    SourceConfig,
)
from resources.config.warehouse import (
    LandingConfig,
    SparkConfig,
    WarehouseConfig,
)
from resources.schema import ConfigError, expression_problems
from resources.spark.engine import spark_engine_problems

CONFIG_ENV_VAR = "CDP_CONFIG"
DEFAULT_CONFIG_NAME = "cdp.yaml"


class CDPConfig(_Strict):
    """The whole configuration file."""

    warehouse: WarehouseConfig = WarehouseConfig()
    landing: LandingConfig = LandingConfig()
    collector: CollectorConfig = CollectorConfig()
    identity: IdentityConfig = IdentityConfig()
    profiles: ProfilesConfig = ProfilesConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    sources: list[SourceConfig]
    segments: list[SegmentConfig] = Field(default_factory=list)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    refresh: RefreshConfig = RefreshConfig()
    alerts: AlertsConfig = AlertsConfig()
    base_dir: Path = Field(Path("."), exclude=True, description="Folder relative paths resolve against.")

    @model_validator(mode="after")
    def _cross_references(self) -> CDPConfig:
        # Every problem at once: a user fixing one key should not have to reload to learn of the next.
        problems: list[str] = []
        if self.warehouse.read_snapshot and self.read_snapshot_path == self.warehouse_path:
            problems.append("warehouse.read_snapshot: must be another file than warehouse.path")
        if self.warehouse.engine == "spark":
            problems += self._spark_folder_problems()
        problems += _unique([s.name for s in self.sources], "sources")
        problems += _unique([s.name for s in self.segments], "segments")
        problems += _unique([d.name for d in self.destinations], "destinations")
        if not self.sources:
            problems.append("sources: declare at least one source")
        elif not any(s.role == "person" for s in self.sources):
            problems.append("sources: at least one source must have role 'person'")
        for i, source in enumerate(self.sources):
            if source.format != "http":
                continue
            sharing = [s.name for s in self.sources if s is not source and s.glob.startswith(f"{source.name}/")]
            if sharing:
                problems.append(
                    f"sources[{i}] ({source.name}): its polls land in the folder '{source.name}/', which the glob of "
                    f"{sharing} also reads; rename the source or move the other's files"
                )
        problems += _identifier_type_problems(self)
        problems += _unique([t.name for t in self.profiles.traits], "profiles.traits")
        source_names = {s.name for s in self.sources}
        # The built-in attributes and the sources' own (checked here, where the sources are known).
        chosen = [*SURVIVORSHIP_ATTRIBUTES, *self.person_attributes]
        if unknown := sorted(set(self.profiles.survivorship.attributes) - set(chosen)):
            problems.append(
                f"profiles.survivorship.attributes: unknown attribute(s) {unknown}; choose from {', '.join(chosen)}"
            )
        for attribute, rule in self.profiles.survivorship.attributes.items():
            unknown = sorted(set(rule.sources or []) - source_names)
            if unknown:
                problems.append(f"profiles.survivorship.attributes.{attribute}.sources: unknown source(s) {unknown}")
        segment_names = {s.name for s in self.segments}
        for i, dest in enumerate(self.destinations):
            if dest.segment is not None and dest.segment not in segment_names:
                problems.append(
                    f"destinations[{i}] ({dest.name}).segment: unknown segment '{dest.segment}'; "
                    f"declared segments: {sorted(segment_names) or 'none'}"
                )
            if dest.type == "file" and dest.segment is None:
                problems.append(f"destinations[{i}] ({dest.name}).segment: a file destination needs a segment")
            purpose = getattr(dest, "purpose", None)
            if purpose is not None and purpose not in self.consent_purposes:
                problems.append(
                    f"destinations[{i}] ({dest.name}).purpose: no source states consent for '{purpose}'; "
                    f"known purposes: {self.consent_purposes or 'none'}"
                )
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    def _spark_folder_problems(self) -> list[str]:
        """The Spark read snapshot's folder must be its own: readers are pointed at it, and each publication
        removes the earlier ones in it, so sharing the warehouse's folder or the landing folder (or holding
        one of them) mixes customer tables or landing files with what readers see; and the warehouse's table
        files must not be where the landing files are looked for."""
        snapshot = self.resolve(self.warehouse.spark.read_snapshot).resolve()
        others = {
            "warehouse.spark.warehouse_dir": self.resolve(self.warehouse.spark.warehouse_dir).resolve(),
            "landing.path": self.resolve(self.landing.path).resolve(),
        }
        problems = [
            f"warehouse.spark.read_snapshot: '{snapshot}' is {key} '{other}', inside it or holds it; "
            "give the read snapshot a folder of its own"
            for key, other in others.items()
            if snapshot == other or snapshot in other.parents or other in snapshot.parents
        ]
        # The table files in the landing folder would be files the landing sensor and a source's glob find.
        warehouse, landing = others["warehouse.spark.warehouse_dir"], others["landing.path"]
        if warehouse == landing or landing in warehouse.parents:
            problems.append(
                f"warehouse.spark.warehouse_dir: '{warehouse}' is in landing.path '{landing}', where sources' "
                "files are found; give the warehouse a folder outside it"
            )
        return problems

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the file's own folder unless absolute."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else (self.base_dir / candidate).resolve()

    @property
    def overrides_path(self) -> Path | None:
        """The manual identity overrides file, when one is configured."""
        return self.resolve(self.identity.overrides) if self.identity.overrides else None

    def identity_overrides(self) -> list[Override]:
        """The manual identity overrides, read and checked now (the file may change between runs); a file with
        mistakes raises ConfigError with one `identity.overrides: <file>: line N: <column>: ...` line each."""
        path = self.overrides_path
        if path is None:
            return []
        try:
            return load_overrides(path, [s.name for s in self.sources], list(self.identity.identifier_types))
        except OverrideError as exc:
            raise ConfigError("\n  ".join(f"identity.overrides: {problem}" for problem in exc.problems)) from None

    @property
    def warehouse_path(self) -> Path:
        return self.resolve(self.warehouse.path)

    @property
    def read_snapshot_path(self) -> Path:
        """The published read-only copy of the public tables: configured, or `<warehouse>_read.duckdb` beside it."""
        if self.warehouse.read_snapshot:
            return self.resolve(self.warehouse.read_snapshot)
        warehouse = self.warehouse_path
        return warehouse.with_name(f"{warehouse.stem}_read.duckdb")

    @property
    def landing_path(self) -> Path:
        return self.resolve(self.landing.path)

    @property
    def collector_sources(self) -> list[SourceConfig]:
        """The sources whose events the collector receives (format 'segment')."""
        return [s for s in self.sources if s.format == "segment"]

    def collector_folder(self, source: SourceConfig) -> Path:
        """Where the collector publishes a Segment-format source's files: the folder of its glob."""
        return self.landing_path / COLLECTOR_FOLDER / source.name

    @property
    def privacy_requests_path(self) -> Path:
        """The folder the privacy requests sensor watches for request files."""
        return self.resolve(self.privacy.requests_path)

    def sources_with_role(self, role: str) -> list[SourceConfig]:
        return [s for s in self.sources if s.role == role]

    @property
    def consent_purposes(self) -> list[str]:
        return sorted({p for s in self.sources for p in s.consent})

    @property
    def person_attributes(self) -> list[str]:
        """The attributes of their own that person sources map: each a text column of the golden profile."""
        return sorted({a for s in self.sources for a in s.attributes})


def _identifier_type_problems(config: CDPConfig) -> list[str]:
    """Each identifier type a source names that is not declared but is spelt almost like one that is:
    a typo (`soc_sec` for `soc_sec_id`) would silently make a type of its own that links nothing across
    sources. An undeclared type unlike any declared one is a type with the default settings, as documented."""
    declared = sorted({"email", "phone", *config.identity.identifier_types})
    problems = []
    for i, source in enumerate(config.sources):
        named = [(f"identifiers[{k}].type", spec.type) for k, spec in enumerate(source.identifiers)]
        if source.segment is not None:
            named += [
                ("segment.user_id_type", source.segment.user_id_type),
                ("segment.anonymous_id_type", source.segment.anonymous_id_type),
            ]
        for key, type_name in named:
            if type_name in declared:
                continue
            close = difflib.get_close_matches(type_name, declared, n=1, cutoff=0.8)
            if close:
                problems.append(
                    f"sources[{i}] ({source.name}).{key}: '{type_name}' is not a declared identifier type; did you "
                    f"mean '{close[0]}'? (to make it a type of its own, declare it under identity.identifier_types)"
                )
    return problems


def _unique(names: list[str], key: str) -> list[str]:
    """A problem for each name used twice under `key`: names are how rows, files and syncs are keyed."""
    seen: set[str] = set()
    problems = []
    for name in names:
        if name in seen and not any(f"'{name}'" in p for p in problems):
            problems.append(f"{key}: the name '{name}' is used twice")
        seen.add(name)
    return problems


def default_config_path() -> Path:
    """`$CDP_CONFIG`, else `cdp.yaml` in the working directory, else the one beside the code."""
    if os.environ.get(CONFIG_ENV_VAR):
        return Path(os.environ[CONFIG_ENV_VAR]).expanduser().resolve()
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    if local.exists():
        return local.resolve()
    return (Path(__file__).resolve().parents[1] / DEFAULT_CONFIG_NAME).resolve()


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping. YAML leaves the choice to the
    reader and PyYAML keeps the last: a second `segments:` at the end of the file would silently replace
    every segment above it (and the next run would close their memberships)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping (first on line {first}); "
                    "the second would silently replace the first",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str] | None = None) -> CDPConfig:
    """Read and validate the configuration; raise ConfigError naming the file and the bad key."""
    config_path = Path(path).resolve() if path is not None else default_config_path()
    if not config_path.exists():
        raise ConfigError(f"{config_path}: configuration file not found (set {CONFIG_ENV_VAR} to point at one)")
    try:
        # Read from the file itself, so a syntax error's place names the file, not "<unicode string>".
        with config_path.open(encoding="utf-8") as stream:
            raw = yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{config_path}: not UTF-8 text (byte {exc.start} cannot be read); save it as UTF-8"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: expected a mapping at the top level, found {type(raw).__name__}")
    if unexpanded := _unexpanded_variables(raw):
        raise ConfigError(f"{config_path}: invalid configuration\n" + "\n".join(f"  {p}" for p in unexpanded))
    try:
        config = CDPConfig.model_validate({**raw, "base_dir": config_path.parent})
    except ValidationError as exc:
        raise ConfigError(f"{config_path}: invalid configuration\n{_describe(exc, raw)}") from None
    # Then every check that needs the whole file, reported together rather than one per reload.
    problems = expression_problems(config)
    try:
        config.identity_overrides()
    except ConfigError as exc:
        problems.append(str(exc))
    # A condition that does not bind on DuckDB is not also reported as one Spark cannot translate.
    judged = {problem.split(": ", 1)[0] for problem in problems}
    problems += [p for p in spark_engine_problems(config) if p.split(": ", 1)[0] not in judged]
    if problems:
        raise ConfigError(f"{config_path}: invalid configuration\n" + "\n".join(f"  {p}" for p in problems))
    return config


# `${NAME}` (or `${NAME:-default}`) as Docker Compose and shells expand it.
_VARIABLE_RE = re.compile(r"\$\{[^{}\s]*\}")


def _unexpanded_variables(node: Any, key: str = "") -> list[str]:
    """Every value written with `${NAME}`, as `key: why`. The file reads no environment variables, so such a
    value would be taken as written: a warehouse in a folder named `${DATA_DIR}`, a URL no host answers.
    Secrets come from variables named by the `*_env` keys; everything else is written out."""
    if isinstance(node, dict):
        return [
            problem
            for name, value in node.items()
            for problem in _unexpanded_variables(value, f"{key}.{name}" if key else str(name))
        ]
    if isinstance(node, list):
        problems = []
        for index, item in enumerate(node):
            label = f"{key}[{index}]" + (f" ({item['name']})" if isinstance(item, dict) and "name" in item else "")
            problems += _unexpanded_variables(item, label)
        return problems
    if isinstance(node, str) and (found := _VARIABLE_RE.search(node)):
        return [
            f"{key}: {found.group()} is not expanded: cdp.yaml reads no environment variables, so the value "
            "would be used as written. Write the value out; a secret stays in the environment, named by an "
            "*_env key (auth.env, dsn_env, key_env, webhook_url_env, collector write keys)"
        ]
    return []


def _describe(exc: ValidationError, raw: dict[str, Any]) -> str:
    """Pydantic's errors rewritten as `sources[2] (crm_contacts).format: ...` so the key is obvious."""
    lines = []
    for error in exc.errors():
        parts: list[str] = []
        node: Any = raw
        for loc in error["loc"]:
            if isinstance(loc, int):
                label = f"[{loc}]"
                node = node[loc] if isinstance(node, list) and loc < len(node) else None
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label += f" ({node['name']})"
                parts.append(label)
            elif loc in ("function-after[_one_of_path_or_value(), FieldSpec]", "file"):
                continue
            else:
                parts.append(("." if parts else "") + str(loc))
                node = node.get(loc) if isinstance(node, dict) else None
        message = error["msg"].removeprefix("Value error, ")
        # Cross-reference errors are raised at the top level and already start with the key they concern.
        lines.append(f"  {''.join(parts)}: {message}" if parts else f"  {message}")
    return "\n".join(lines)


__all__ = [
    "AlertsConfig",
    "CDPConfig",
    "COLLECTOR_FOLDER",
    "CollectorConfig",
    "CONFIG_ENV_VAR",
    "ConfigError",
    "DEFAULT_CONFIG_NAME",
    "DestinationConfig",
    "EVENT_FIELDS",
    "FieldSpec",
    "FileDestinationConfig",
    "HashedAudienceDestinationConfig",
    "IdentityConfig",
    "LandingConfig",
    "MatchingConfig",
    "PERSON_FIELDS",
    "PrivacyConfig",
    "ProfilesConfig",
    "RefreshConfig",
    "RowDestinationConfig",
    "SegmentConfig",
    "SourceConfig",
    "SparkConfig",
    "SurvivorshipRule",
    "TraitConfig",
    "WarehouseConfig",
    "default_config_path",
    "load_config",
]
