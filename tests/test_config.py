"""The configuration is validated at load time, and errors name the file and the key."""

import re
from pathlib import Path

import pytest
import yaml

from resources.config import ConfigError, load_config
from sensors.automation import MAX_RETRIES_TAG, build_automation_sensor
from tests.fixtures import REPO, write_config

pytestmark = pytest.mark.unit


def _with(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((REPO / "cdp.yaml").read_text())
    mutate(raw)
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_repository_config_is_valid_and_paths_resolve_against_its_folder():
    config = load_config(REPO / "cdp.yaml")
    assert config.warehouse_path == REPO / "data" / "warehouse.duckdb"
    assert config.landing_path == REPO / "data" / "landing"
    assert config.consent_purposes == ["email_marketing"]
    assert config.read_snapshot_path == REPO / "data" / "warehouse_read.duckdb"


@pytest.mark.parametrize(
    ("read_snapshot", "expected"),
    [("data/warehouse.duckdb", "must be another file than warehouse.path"), ("data/read.csv", "not a .duckdb file")],
)
def test_read_snapshot_must_be_another_duckdb_file(tmp_path, read_snapshot, expected):
    path = _with(tmp_path, lambda c: c["warehouse"].update(read_snapshot=read_snapshot))
    with pytest.raises(ConfigError, match=rf"warehouse\.read_snapshot: .*{expected}"):
        load_config(path)


def test_cdp_config_environment_variable_points_elsewhere(tmp_path, monkeypatch):
    path = write_config(tmp_path)
    monkeypatch.setenv("CDP_CONFIG", str(path))
    assert load_config().landing_path == tmp_path / "landing"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["sources"][0].update(format="xlsx"), r"sources\[0\] \(crm_contacts\)\.format"),
        (lambda c: c["sources"][1].update(role="people"), r"sources\[1\] \(shop_customers\)\.role"),
        (lambda c: c["sources"][0]["fields"].update(shoe_size="Shoe"), r"shoe_size.*not canonical"),
        (lambda c: c["sources"][0].update(colour="red"), r"sources\[0\] \(crm_contacts\)\.colour"),
        (lambda c: c["sources"][0].update(trust=150), r"sources\[0\] \(crm_contacts\)\.trust"),
        (lambda c: c["sources"][3]["fields"].pop("amount"), r"must map 'amount'"),
        (lambda c: c["sources"].append(dict(c["sources"][0])), r"'crm_contacts' is used twice"),
        (
            lambda c: c["segments"][0].update(where="lifetime_revenu > 5"),
            r"segments\[0\] \(high_value\)\.where",
        ),
        (
            lambda c: c["segments"][0].update(where="first_name + 1 > 2"),
            r"segments\[0\] \(high_value\)\.where",
        ),
        (lambda c: c["segments"][0].update(where="true; drop table x"), r"';' is not allowed"),
        (
            lambda c: c["destinations"][0].update(segment="nope"),
            r"destinations\[0\] \(viewed_not_bought_webhook\)\.segment",
        ),
        (lambda c: c["destinations"][0].update(fields=["customer_id", "shoe"]), r"unknown profile column"),
        (
            lambda c: c["identity"]["identifier_types"]["email"].update(blocked_patterns=["(["]),
            r"identity\.identifier_types\.email\.blocked_patterns",
        ),
        (
            lambda c: c["identity"]["identifier_types"]["email"].update(blocked_patterns=["^(?!x).*@spam"]),
            r"identity\.identifier_types\.email\.blocked_patterns.*not a valid RE2",
        ),
        # A listed phone in another country's national form would be compared as written and block nothing.
        (
            lambda c: c["identity"]["identifier_types"]["phone"].update(blocked_values=["030 12345678"]),
            r"identity\.identifier_types\.phone\.blocked_values: '030 12345678' is no US phone number and gives "
            r"no country code",
        ),
        (
            lambda c: c["sources"][0]["fields"].update(city={"path": "x", "value": "y"}),
            r"exactly one of 'path'",
        ),
        # An empty list of paths reads nothing: cleaning would fail on the SQL it makes, naming no field.
        (
            lambda c: c["sources"][0]["fields"].update(city={"path": []}),
            r"sources\[0\] \(crm_contacts\)\.fields\.city: .*'path' must name at least one field",
        ),
        (
            lambda c: c["sources"][0].update(record_id={"path": []}),
            r"sources\[0\] \(crm_contacts\)\.record_id: .*'path' must name at least one field",
        ),
        # A strptime code the reader does not know (DuckDB's for timestamps, Python's for birth dates) would
        # fail every cleaning run, or refuse every value: refused at load, naming the field and the format.
        (
            lambda c: c["sources"][3]["fields"].update(occurred_at={"path": "created_at", "formats": ["%s"]}),
            r"sources\[3\] \(shop_orders\): fields\.occurred_at: formats: '%s' is not a format DuckDB's strptime "
            r"reads: .*for seconds since 1970, write the format unix_seconds",
        ),
        (
            lambda c: c["sources"][0]["fields"].update(
                date_of_birth={"path": "Birthdate", "formats": ["unix_seconds"]}
            ),
            r"sources\[0\] \(crm_contacts\): fields\.date_of_birth: formats: 'unix_seconds' is a Unix time, which only "
            r"timestamps take",
        ),
        (
            lambda c: c["sources"][0]["fields"].update(date_of_birth={"path": "Birthdate", "formats": ["%d.%m.%Q"]}),
            r"sources\[0\] \(crm_contacts\): fields\.date_of_birth: formats: '%d\.%m\.%Q' is not a format "
            r"Python's strptime reads: 'Q' is a bad directive",
        ),
        (
            lambda c: c["destinations"][2]["fields"].update(name_sha256="first_name"),
            r"destinations\[2\] \(champions_ads\)\..*fields: name_sha256: a hashed field must map to an e-mail",
        ),
        (
            lambda c: c["identity"].update(matching={"blocking_rules": [["city"], {"features": ["shoe"]}]}),
            r"identity\.matching\.blocking_rules.*blocking rule 1 names unknown feature",
        ),
        (
            lambda c: c["sources"][1]["identifiers"][0].update(type="shop_customer"),
            r"sources\[1\] \(shop_customers\)\.identifiers\[0\]\.type: 'shop_customer' is not a declared identifier "
            r"type; did you mean 'shop_customer_id'\?",
        ),
        (
            lambda c: c.setdefault("refresh", {}).update(time_windows="61 0 * * *"),
            r"refresh\.time_windows: .*'61 0 \* \* \*' is not a valid cron expression: a field is out of range",
        ),
        (
            lambda c: c["privacy"].update(retention_cron="every day"),
            r"privacy\.retention_cron: .*'every day' is not a cron expression of five fields",
        ),
        (lambda c: c["sources"][0].update(expected_every="0 days"), r"sources\[0\] \(crm_contacts\)\.expected_every"),
        (lambda c: c["profiles"]["traits"][0].update(window="0 days"), r"profiles\.traits\[0\].*\.window"),
        (
            lambda c: c.setdefault("alerts", {}).update(ui_url="localhost:3000"),
            r"alerts\.ui_url: not an http\(s\) URL with a host",
        ),
        (
            lambda c: c.setdefault("alerts", {}).update(webhook_url_env="my alert url"),
            r"alerts\.webhook_url_env: .*'my alert url' is not an environment variable name",
        ),
        (
            lambda c: c["destinations"][0].update(url="127.0.0.1:8402/hook"),
            r"destinations\[0\] \(viewed_not_bought_webhook\)\.webhook\.url: not an http\(s\) URL",
        ),
    ],
)
def test_invalid_config_names_the_key(tmp_path, mutate, expected):
    path = _with(tmp_path, mutate)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_an_as_of_timestamp_written_unquoted_is_that_time(tmp_path):
    """YAML reads `as_of: 2025-06-30T00:00:00`, the documentation's own example unquoted, as a timestamp."""
    path = _with(tmp_path, lambda c: c["profiles"].update(as_of="PLACEHOLDER"))
    path.write_text(path.read_text().replace("PLACEHOLDER", "2025-06-30T00:00:00"))
    assert "as_of: 2025-06-30T00:00:00\n" in path.read_text()
    assert load_config(path).profiles.as_of == "2025-06-30T00:00:00"
    path.write_text(path.read_text().replace("as_of: 2025-06-30T00:00:00", "as_of: 2025-06-30"))
    assert load_config(path).profiles.as_of == "2025-06-30"


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [\n")
    # The place of a syntax error names the file, not the text it was read into.
    with pytest.raises(ConfigError, match=rf'(?s)not valid YAML: .*in "{re.escape(str(bad))}", line 2'):
        load_config(bad)
    bad.write_bytes(b"warehouse:\n  path: caf\xe9.duckdb\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not UTF-8 text \(byte 22 cannot be read\)"):
        load_config(bad)


def test_a_key_written_twice_is_refused_rather_than_the_last_one_kept(tmp_path):
    """A second `segments:` appended to a valid file would otherwise replace every segment above it."""
    path = _with(tmp_path, lambda c: None)
    assert load_config(path).segments
    path.write_text(path.read_text() + "segments:\n- name: only_this_one\n  where: 'true'\n")
    with pytest.raises(ConfigError, match=r"key 'segments' appears twice in one mapping \(first on line \d+\)"):
        load_config(path)
    # Within a nested mapping too, naming the line of the second.
    path = _with(tmp_path, lambda c: None)
    text = path.read_text().replace("warehouse:\n", "warehouse:\n  threads: 1\n  threads: 2\n", 1)
    path.write_text(text)
    with pytest.raises(ConfigError, match="key 'threads' appears twice") as raised:
        load_config(path)
    assert f"line {text.splitlines().index('  threads: 2') + 1}" in str(raised.value)


def test_an_undeclared_identifier_type_unlike_any_declared_one_is_a_type_of_its_own(tmp_path):
    path = _with(tmp_path, lambda c: c["sources"][1]["identifiers"].append({"path": "ssn", "type": "national_id"}))
    assert load_config(path).identity.type_config("national_id").normalize == "id"


def test_a_listed_phone_blocks_the_number_whether_written_with_its_country_code_or_as_a_us_number():
    from cdp_assets.identity.assets import blocked_condition
    from resources.config import CDPConfig

    config = CDPConfig.model_validate(
        {
            "identity": {
                "identifier_types": {
                    "phone": {"normalize": "phone", "blocked_values": ["+49 30 12345678", "0049 30 1111111"]},
                    "hotline": {"normalize": "phone", "blocked_values": ["(212) 736-5000"]},
                }
            },
            "sources": [{"name": "crm", "format": "csv", "glob": "*.csv", "role": "person", "record_id": "id"}],
        }
    )
    _, literals = blocked_condition(config, ["phone", "hotline"])
    listed = set(map(tuple, literals.itertuples(index=False)))
    assert {("phone", "+493012345678"), ("phone", "+49301111111"), ("hotline", "+12127365000")} <= listed


def test_user_blocked_values_extend_the_built_in_junk_list(tmp_path):
    path = _with(tmp_path, lambda c: c["identity"]["identifier_types"]["email"].update(blocked_values=["x@y.com"]))
    email = load_config(path).identity.type_config("email")
    assert "x@y.com" in email.blocked_values and "test@test.com" in email.blocked_values


def test_a_blocking_rule_may_carry_its_own_smaller_block_cap():
    from resources.config import MatchingConfig

    matching = MatchingConfig(
        blocking_rules=[["city"], {"features": ["first_initial", "last_name"], "max_block_size": 5}],
        max_block_size=50,
    )
    assert matching.block_rules() == [(["city"], 50), (["first_initial", "last_name"], 5)]
    assert MatchingConfig(blocking_rules=[{"features": ["city"], "max_block_size": 500}]).block_rules() == [
        (["city"], 100)
    ]


def test_every_problem_of_a_check_is_reported_at_once(tmp_path):
    """A user fixing their file learns of every problem in one load, not one per reload: the checks that
    compare keys with each other, then those that bind conditions and columns."""

    def cross_references(c):
        c["sources"].append(dict(c["sources"][0]))
        c["destinations"][1]["segment"] = "big_spenders"
        c["sources"][2]["identifiers"][0]["type"] = "loyalty_crd"

    with pytest.raises(ConfigError) as info:
        load_config(_with(tmp_path, cross_references))
    message = str(info.value)
    assert "'crm_contacts' is used twice" in message
    assert "destinations[1] (crm_high_value).segment: unknown segment 'big_spenders'" in message
    assert "sources[2] (pos_loyalty).identifiers[0].type: 'loyalty_crd' is not a declared identifier type" in message

    def expressions(c):
        c["profiles"]["traits"][1]["column"] = "amout"
        c["segments"][0]["where"] = "revenue_last_365_days > 100 and lifetime_revenu > 5"
        c["segments"][2]["where"] = "order_count >"
        c["destinations"][1]["fields"]["Shoe"] = "shoe_size"

    with pytest.raises(ConfigError) as info:
        load_config(_with(tmp_path, expressions))
    lines = str(info.value).splitlines()
    assert lines[0].endswith("cdp.yaml: invalid configuration")
    keys = [line.split(":")[0].strip() for line in lines[1:]]
    assert keys == [
        "profiles.traits[1] (revenue_last_365_days).column",
        "destinations[1] (crm_high_value).fields",
        "segments[0] (high_value).where",
        "segments[2] (viewed_not_bought).where",
    ]
    # The segment reading the trait whose column is wrong is judged on its own mistake, not the trait's.
    assert "lifetime_revenu" in lines[3] and "revenue_last_365_days" not in lines[3].split(":")[1]


def test_every_mistake_of_the_overrides_file_is_listed_in_the_configuration_error(tmp_path):
    """Like the keys of cdp.yaml, the overrides file's mistakes come in one message, one line each."""
    (tmp_path / "overrides.csv").write_text(
        "action,record,other,author,reason\n"
        "merge,crm_contacts/C-1,crm_contacts/C-2,ana,x\n"
        "must_link,crm_contacts/C-1,shop_customers/S-1,,x\n"
        "unmerge,crm_contacts/C-3,,li,\n"
    )
    path = _with(tmp_path, lambda c: c["identity"].update(overrides="overrides.csv"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert lines[0].endswith("cdp.yaml: invalid configuration")
    overrides = tmp_path / "overrides.csv"
    assert lines[1:] == [
        f"  identity.overrides: {overrides}: line 2: action: unknown action 'merge'; use one of must_link, "
        "cannot_link, unmerge",
        f"  identity.overrides: {overrides}: line 3: author: empty; every override needs an author and a reason",
        f"  identity.overrides: {overrides}: line 4: reason: empty; every override needs an author and a reason",
    ]


def test_a_webhook_field_cannot_take_the_name_the_merged_ids_travel_under(tmp_path):
    path = _with(tmp_path, lambda raw: raw["destinations"][0]["fields"].update(merged_from="email"))
    with pytest.raises(
        ConfigError, match=r"destinations\[0\] \(viewed_not_bought_webhook\)\.webhook\.fields: merged_from: the name"
    ):
        load_config(path)


def _yaml_examples() -> list[tuple[str, int, str]]:
    """Every YAML block of README.md and docs/configuration.md: (file, line of its first row, text)."""
    found = []
    for name in ("README.md", "docs/configuration.md"):
        text = (REPO / name).read_text()
        for match in re.finditer(r"```yaml\n(.*?)```", text, re.S):
            found.append((name, text[: match.start()].count("\n") + 2, match.group(1)))
    return found


# Keys the examples show on their own that live inside a section of cdp.yaml.
_NESTED = {"blocking_rules": ("identity", "matching")}


def _merge_named(current: list[dict], items: list[dict]) -> list[dict]:
    """`current` with each item of `items` merged into the entry of its name, or added."""
    merged = [dict(entry) for entry in current]
    for item in items:
        same = [entry for entry in merged if entry.get("name") == item.get("name")]
        if same:
            same[0].update(item)
        else:
            merged.append(item)
    return merged


def _with_example(raw: dict, data: dict) -> dict:
    """`raw` (a parsed cdp.yaml) with the example `data` put where a user would put it."""
    for key, value in data.items():
        if key in _NESTED:
            section = raw
            for part in _NESTED[key]:
                section = section.setdefault(part, {})
            section[key] = value
        elif isinstance(value, list) and isinstance(raw.get(key), list):
            raw[key] = _merge_named(raw[key], value)
        elif isinstance(value, dict) and isinstance(raw.get(key), dict):
            for inner, part in value.items():
                if isinstance(part, list) and isinstance(raw[key].get(inner), list):
                    raw[key][inner] = _merge_named(raw[key][inner], part)
                else:
                    raw[key][inner] = part
        else:
            raw[key] = value
    return raw


@pytest.mark.parametrize(
    ("doc", "line", "example"),
    [pytest.param(*example, id=f"{example[0]}:{example[1]}") for example in _yaml_examples()],
)
def test_every_yaml_example_of_the_docs_loads_as_part_of_a_configuration(tmp_path, doc, line, example):
    """Users copy these examples into their cdp.yaml: each must parse, and, put into the repository's
    configuration (a list as the sources, destinations, segments or traits it shows), load."""
    try:
        data = yaml.safe_load(example)
    except yaml.YAMLError as error:
        pytest.fail(f"{doc}:{line}: not valid YAML: {error}")
    if isinstance(data, dict) and set(data) == {"ops"}:
        return  # run config for the Launchpad, not part of cdp.yaml
    base = yaml.safe_load((REPO / "cdp.yaml").read_text())
    if isinstance(data, dict):
        candidates = [_with_example(base, data)]
    else:
        candidates = [
            _with_example(yaml.safe_load(yaml.safe_dump(base)), {key: data})
            for key in ("sources", "destinations", "segments")
        ]
        candidates.append(_with_example(yaml.safe_load(yaml.safe_dump(base)), {"profiles": {"traits": data}}))
    errors = []
    for raw in candidates:
        path = tmp_path / "cdp.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        try:
            load_config(path)
            return
        except ConfigError as error:
            errors.append(str(error))
    pytest.fail(f"{doc}:{line}: the example does not load: " + " / ".join(errors))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fields": {"id": "email"}}, r"fields: 'id' is the key column \(key_column\), which holds the primary_key"),
        ({"fields": {"_cdp_synced_at": "email"}}, r"fields: '_cdp_synced_at' is the column of each row's sync time"),
        ({"key_column": "_cdp_synced_at"}, r"key_column: '_cdp_synced_at' is the column of each row's sync time"),
        ({"fields": {"e" * 64: "email"}}, r"fields: 'e{64}' is longer than 63 bytes"),
        ({"table": "t" * 64}, r"table: 't{64}' must be 1 to 63 bytes"),
    ],
)
def test_a_postgres_field_named_like_the_tables_own_columns_is_refused(tmp_path, change, message):
    """The table's key and sync-time columns are written by the sync: a field of that name was dropped unsent."""

    def mutate(raw: dict) -> None:
        destination = {"name": "app_vips", "type": "postgres", "segment": "high_value", "dsn_env": "APP_DB"}
        raw["destinations"].append({**destination, "table": "vip_customers", **change})

    with pytest.raises(ConfigError, match=rf"destinations\[\d+\] \(app_vips\)\.postgres(: |\.){message}"):
        load_config(_with(tmp_path, mutate))


def test_a_destination_retry_whose_longest_wait_is_shorter_than_its_first_is_refused(tmp_path):
    """Capped by the shorter longest_wait, the first retry came after 1 minute, not the 2 hours configured."""
    retry = {"first_after": "2 hours", "longest_wait": "1 minute"}
    path = _with(tmp_path, lambda c: c.setdefault("refresh", {}).update(destination_retry=retry))
    with pytest.raises(ConfigError, match=r"refresh\.destination_retry: longest_wait \(1 minute\) is shorter than"):
        load_config(path)
    # Left at its default (1 hour), longest_wait gives way to a longer first_after.
    path = _with(tmp_path, lambda c: c.setdefault("refresh", {}).update(destination_retry={"first_after": "2 hours"}))
    retried = load_config(path).refresh.destination_retry
    assert retried is not None and [retried.wait(n).total_seconds() for n in (1, 2, 3)] == [7200.0] * 3


@pytest.mark.parametrize("glob", ["/srv/exports/crm/*.csv", "../crm/*.csv", "crm/../../*.csv"])
def test_a_glob_outside_the_landing_folder_is_refused(tmp_path, glob):
    """An absolute pattern failed every tick of the landing sensor (Path.glob refuses it), for all sources."""
    path = _with(tmp_path, lambda c: c["sources"][0].update(glob=glob))
    with pytest.raises(ConfigError, match=r"sources\[0\] \(crm_contacts\)\.glob: .* must be a pattern inside"):
        load_config(path)


def test_csv_options_on_a_source_of_another_format_are_refused(tmp_path):
    """The JSON-lines and Parquet readers never read them: an encoding set there was silently ignored."""
    shop = lambda c: next(s for s in c["sources"] if s["format"] == "jsonl")  # noqa: E731
    path = _with(tmp_path, lambda c: shop(c).update(csv={"encoding": "latin-1"}))
    with pytest.raises(ConfigError, match=r"\): csv: its delimiter, quote and encoding apply to format csv only"):
        load_config(path)
    # Written out in full, with the defaults, it loads.
    assert load_config(_with(tmp_path, lambda c: shop(c).update(csv={"delimiter": ",", "encoding": "utf-8"})))


def test_a_value_written_with_an_environment_variable_is_refused_naming_its_key(tmp_path):
    def mutate(raw: dict) -> None:
        raw["warehouse"]["path"] = "${DATA_DIR}/warehouse.duckdb"
        raw["destinations"][0]["url"] = "https://${HOOK_HOST}/audience"

    with pytest.raises(ConfigError) as raised:
        load_config(_with(tmp_path, mutate))
    lines = str(raised.value).splitlines()[1:]
    assert [line.split(": ", 1)[0].strip() for line in lines] == [
        "warehouse.path",
        "destinations[0] (viewed_not_bought_webhook).url",
    ]
    assert "${DATA_DIR} is not expanded: cdp.yaml reads no environment variables" in lines[0]
    # Nothing was created under the literal name.
    assert not (tmp_path / "${DATA_DIR}").exists()
    # A dollar sign that is no variable (a regular expression's end) is left alone.
    path = _with(tmp_path, lambda raw: raw["segments"][0].update(where="regexp_matches(email, '^a.*$')"))
    assert load_config(path).segments[0].where == "regexp_matches(email, '^a.*$')"


def test_crashed_run_retries_tag_the_automation_runs_and_are_bounded(tmp_path):
    path = _with(tmp_path, lambda c: c["refresh"].update(crashed_run_retries=0))
    assert build_automation_sensor(load_config(path)).run_tags[MAX_RETRIES_TAG] == "0"
    path = _with(tmp_path, lambda c: c["refresh"].update(crashed_run_retries=11))
    with pytest.raises(ConfigError, match=r"refresh.crashed_run_retries: Input should be less than or equal to 10"):
        load_config(path)
