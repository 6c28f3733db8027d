"""The per-record features the probabilistic layer blocks and compares on: the matching records table.

Adding a blocking feature: its name and the comparisons it forces to agree in BLOCKING_FEATURES
(resources/config/identity.py), its SQL in FEATURES below.

Cleaning already normalised names, e-mails, phones, addresses and postal codes; here each person record
(its latest version) gets the forms matching needs: lower-cased names, the formal form of a nickname,
Soundex codes so that typos still meet in a block, the e-mail's local part, a birth date as text for
edit distances, and one non-contact identifier. Derived once per distinct value in Python (a few
hundred thousand names at most), everything else stays in DuckDB.
"""

import re
from dataclasses import dataclass

import jellyfish
import pandas as pd

from cdp_assets.clean.rules import fold_accents_sql as fold
from cdp_assets.identity.clustering import umlauts_dropped
from cdp_assets.identity.islands import Scope, record_key
from cdp_assets.identity.nicknames import canonical_first_name
from resources.config import CDPConfig
from resources.identifiers import contact_kinds
from resources.sql import Sql, portable_hash
from resources.warehouse import sql_literal


def _name_forms(names: list[str]) -> pd.DataFrame:
    """Each distinct (folded, lower-case) name's forms: its formal first name, its Soundex code, and its
    spelling with a German umlaut spelt out or not read alike (`spelt`: Schröder, folded to schroder, and
    Schroeder are both schroder), so that a shop without umlauts blocks with the CRM that has them."""
    rows = []
    for name in names:
        letters = "".join(ch for ch in name if ch.isalpha())
        soundex = jellyfish.soundex(letters) if letters else None
        # A middle initial a form's first-name field took along ("bob m.") is not part of the name whose
        # formal form the nickname level and the first_name_canon block read: Bob M. is a Robert.
        given = _TRAILING_INITIAL.sub("", name)
        rows.append((name, canonical_first_name(given) or name, soundex, umlauts_dropped(name)))
    return pd.DataFrame(rows, columns=["name", "canon", "soundex", "spelt"], dtype=object)


# A single letter, with its dot, ending a name of several words ("bob m.", not "j." alone).
_TRAILING_INITIAL = re.compile(r"(?<=[^\W\d_]{2})[\s,]+[^\W\d_]\.?$")


# The e-mail key with its i-th character deleted (none for i = 0).
EMAIL_ONE_DELETION = (
    "case when i = 0 then b.email_key else left(b.email_key, i::integer - 1) || substr(b.email_key, i::integer + 1) end"
)

# Each blocking feature's column of the matching records, over the record's base features `b` (its other
# identifier among them) and the forms of its first (`f`) and last (`l`) names. The names are declared, with the
# comparisons each forces to agree, in resources/config/identity.py (BLOCKING_FEATURES).
FEATURES: dict[str, str] = {
    "first_name": "b.first_name",
    "first_name_canon": "f.canon",
    "first_name_soundex": "f.soundex",
    "first_initial": "left(b.first_name, 1)",
    "last_name": "b.last_name",
    "last_name_soundex": "l.soundex",
    # Either order, and an umlaut spelt out or not alike (Jürgen Müller, Juergen Mueller): a record without
    # a birth date meets its person's other records in a block on this and the postal code, its surest key.
    "name_pair": "case when b.first_name is not null and b.last_name is not null "
    "then least(f.spelt, l.spelt) || ' ' || greatest(f.spelt, l.spelt) end",
    "date_of_birth": "b.date_of_birth",
    "birth_year": "year(b.date_of_birth)",
    "email": "b.email",
    "email_local": "b.email_local",
    "email_local_key": "b.email_local_key",
    # The address (user dots and +tag dropped) and every form of it with one character deleted: two
    # addresses one keying slip apart share one of these forms (a deletion neighbourhood; of a doubled
    # letter one deletion only, so a record is in each block once), so a rule on it finds them without
    # comparing every pair. Kept as 60-bit hashes, a fifth of the strings' memory at a million records (a
    # collision only adds a candidate pair the comparisons then score). Users under five characters are too
    # short for a slip to be told from another user (the comparison's rule too); their domain slips meet on
    # email_local_key. Hashed with portable_hash, not DuckDB's hash(), which gave 235 pairs of different
    # forms one value among the 19.3M forms of the 1M-people demo (johnrodriguez89@hotmail.com and
    # johnrodtiguez892hotmail.com): DuckDB then made candidate pairs that Spark's hash did not, and the
    # engines trained different models. The md5 prefix gave no such pair, and one value on both engines.
    "email_one_slip": "case when length(b.email_local_key) >= 5 then"
    f" [{portable_hash(EMAIL_ONE_DELETION)} for i in range(0, length(b.email_key) + 1)"
    " if i < 2 or substr(b.email_key, i::integer, 1) <> substr(b.email_key, i::integer - 1, 1)] end",
    "phone": "b.phone",
    "address": "b.address",
    "postal_code": "b.postal_code",
    "city": "b.city",
    "identifier": "b.identifier",
}
# Columns the comparisons read besides the features.
_COMPARED_ONLY: dict[str, str] = {
    "first_canon": "f.canon",
    # The last name read as a first name (Tony as anthony): a record signed surname first has its first
    # name there, which the comparisons then read as a nickname of the other record's.
    "last_canon": "l.canon",
    "dob_text": "strftime(b.date_of_birth, '%Y%m%d')",
    "identifier_type": "split_part(b.identifier, ':', 1)",
    # The source whose own record id the identifier is (a shop's customer number on the shop's record):
    # two such ids of one source are two records by design, never one id mistyped.
    "identifier_owner": "case when substr(b.identifier, strpos(b.identifier, ':') + 1) = b.source_record_id "
    "then b.source end",
    "email_domain": "nullif(split_part(b.email, '@', 2), '')",
    "email_split": "b.email_split",
}


# Every column a matching record has besides its keys and base-row hash.
FEATURE_COLUMNS = sorted({**FEATURES, **_COMPARED_ONLY})


@dataclass(frozen=True)
class KeptFeatures:
    """The last run's matching records, kept as `table` with their base-row hashes, and the caller's temp
    tables build_match_records fills when it keeps them: `fresh` (node_id), the records whose features it
    derived again (new, or their base row changed), and `gone`, the kept rows of records changed or gone
    since (narrowed to their keys once the blocking has read them). The blocking of a delta and the saving
    of the features read these two (pairs.py): found once here, where the records are compared with the
    kept rows anyway, not by joining millions of rows again."""

    table: str
    fresh: str
    gone: str


def build_match_records(
    sql: Sql,
    config: CDPConfig,
    person_latest: str,
    records: str,
    kept: KeptFeatures | None = None,
    scope: Scope | None = None,
) -> int:
    """Rebuild the caller's temp table `records` (one row per person record: its blocking features and
    the columns the comparisons read) from `person_latest` (the latest version of each person record, by
    node, also a table of the caller's); returns its row count.

    Every feature is a function of a record's base row (its cleaned fields as matching reads them, which
    of its contacts are junk or shared, its other identifier), whose hash is the `base_hash` column. With
    `kept` (the last run's records), a record whose base row hashes as it did takes its features from
    there, and only the others are derived again (the name forms in Python, the e-mail's one-slip forms)
    over their distinct values.

    With `scope` as well (the records a delta's deterministic layer resolved again, islands.py), only the
    scope's records have their base row made, and every other record keeps its kept row: nothing its base
    row reads can have changed. Its own fields are as they were (the islands' inputs hash covers every
    person field read here), and whether one of its values is junk, shared by several people or its other
    identifier is decided by pattern or list, or on the records of its island, which is outside the scope
    too. Making every record's base row was a full pass of a delta (3.9 s of a 1% delta at 1M people)."""
    with sql.scratch("features") as tables:
        kinds = tables.frame(
            "type_kinds",
            pd.DataFrame(
                [(t, spec.normalize) for t, spec in config.identity.identifier_types.items()],
                columns=["id_type", "kind"],
            ),
        )
        contact_types = [t for t, spec in config.identity.identifier_types.items() if spec.normalize in contact_kinds()]
        # Junk contact values (test@test.com, 0000000000) agree between strangers; they must not count as
        # evidence here either. Values blocked only for being shared by several people stay: agreeing on a
        # family e-mail is weak evidence the model weighs, and strong conflicts keep the family apart.
        junk = tables("junk_contacts")
        sql.create_table_as(
            junk,
            f"""
            select b.id_value, k.kind from identity.blocked_identifiers b join {kinds} k using (id_type)
            where k.kind in ({", ".join(sql_literal(k) for k in contact_kinds())}) and b.reason not like 'shared by %'
            """,
            temporary=True,
        )
        # An e-mail that links only within each of the people sharing it has been read already, record by
        # record, by the deterministic layer: its records of one person are joined, and agreeing on it says
        # nothing more about the others (a family's "Brown K." and "Brown C." are not one person for it).
        split = tables("split_emails")
        sql.create_table_as(
            split,
            f"""select s.id_value from identity.shared_identifiers s join {kinds} k using (id_type)
                where k.kind = 'email'""",
            temporary=True,
        )
        sql.drop_table("identity.match_records")  # persisted by earlier versions
        contact_type_table = tables.frame("contact_types", pd.DataFrame({"id_type": contact_types or ["-"]}))
        base = tables("base")
        within = scope if kept is not None else None  # a scope narrows only what kept rows can stand for
        made = f"(select * from {person_latest} semi join {within.nodes} using (node_id))" if within else person_latest
        base_select = f"""
            with other_ids as (
                select i.source, i.source_record_id, min(i.id_type || ':' || i.id_value) as identifier
                from clean.person_identifiers i
                semi join {made} p using (source, source_record_id)
                where i.id_type not in (select id_type from {contact_type_table})
                  and not exists (select 1 from identity.blocked_identifiers b
                                  where b.id_type = i.id_type and b.id_value = i.id_value)
                group by 1, 2
            ),
            contacts as (
                select p.*,
                       case when p.email_match_key in (select id_value from {junk} where kind = 'email')
                            then null else p.email_match_key end as usable_email,
                       case when p.phone in (select id_value from {junk} where kind = 'phone')
                            then null else p.phone end as usable_phone
                from {made} p
            )
            select p.node_id, p.source, p.source_record_id,
                   nullif(lower(trim({fold("p.first_name")})), '') as first_name,
                   nullif(lower(trim({fold("p.last_name")})), '') as last_name,
                   p.date_of_birth, p.usable_email as email,
                   -- false, not NULL, without an e-mail: what `in (select ...)` gives on Spark too
                   coalesce(p.usable_email in (select id_value from {split}), false) as email_split,
                   nullif(split_part(p.usable_email, '@', 1), '') as email_local,
                   -- The mailbox's user as any provider reads it, dots and +tag dropped: it survives a
                   -- slip in the domain that keeps Gmail's own rules from being applied (gmail.cmo).
                   nullif(replace(split_part(split_part(p.usable_email, '@', 1), '+', 1), '.', ''), '')
                       as email_local_key,
                   replace(split_part(split_part(p.usable_email, '@', 1), '+', 1), '.', '')
                       || '@' || split_part(p.usable_email, '@', 2) as email_key,
                   nullif(regexp_replace(p.usable_phone, '[^0-9]', '', 'g'), '') as phone,
                   nullif(lower(trim(p.address_key)), '') as address,
                   nullif(lower(regexp_replace(p.postal_code, '\\s', '', 'g')), '') as postal_code,
                   nullif(lower(trim({fold("p.city")})), '') as city, o.identifier
            from contacts p
            left join other_ids o using (source, source_record_id)
            """
        base_columns = [c for c in sql.columns(base_select) if c not in ("node_id", "source", "source_record_id")]
        sql.create_table_as(
            base,
            f"select *, hash({', '.join(base_columns)}) as base_hash from ({base_select})",
            temporary=True,
        )
        fresh = base
        if kept is not None:
            fresh = tables("fresh")
            sql.create_table_as(
                fresh,
                f"select * from {base} anti join {kept.table} using (source, source_record_id, base_hash)",
                temporary=True,
            )
            sql.create_table_as(kept.fresh, f"select node_id from {fresh}", temporary=True)
            # The kept rows of records changed or gone: outside a scope none are (a record gone is in the scope).
            candidates = (
                f"(select * from {kept.table} t semi join {within.keys} s on s.key = {record_key('t')})"
                if within
                else kept.table
            )
            sql.create_table_as(
                kept.gone,
                f"select * from {candidates} anti join {base} using (source, source_record_id, base_hash)",
                temporary=True,
            )
        names = sql.rows(
            f"select distinct v from (select unnest([first_name, last_name]) v from {fresh}) where v is not null"
        )
        forms = tables.frame("name_forms", _name_forms([n for (n,) in names]))
        # The one-slip forms (some twenty hashes per address, most of this step's time) once per address:
        # the records of one person, and of a family, often give the same one (584k addresses among the
        # end-to-end benchmark's 1M records). The e-mail key decides the user key (the part before its @).
        slips = tables("email_slips")
        sql.create_table_as(
            slips,
            f"""select b.email_key, {FEATURES["email_one_slip"]} as email_one_slip
                from (select distinct email_key, email_local_key from {fresh} where email_key is not null) b""",
            temporary=True,
        )
        expressions = {**FEATURES, **_COMPARED_ONLY, "email_one_slip": "s.email_one_slip"}
        columns = ",\n                   ".join(f"{expressions[n]} as {n}" for n in FEATURE_COLUMNS)
        derived = f"""
            select b.node_id, b.source, b.source_record_id,
                   {columns}, b.base_hash
            from {fresh} b
            left join {forms} f on f.name = b.first_name
            left join {forms} l on l.name = b.last_name
            left join {slips} s on s.email_key = b.email_key
            """
        if kept is not None:
            listed = ", ".join(f"k.{n}" for n in FEATURE_COLUMNS)
            # Every kept row but those changed or gone, under this run's node id.
            derived += f"""
            union all
            select p.node_id, k.source, k.source_record_id, {listed}, k.base_hash
            from {kept.table} k join {person_latest} p using (source, source_record_id)
            anti join {kept.gone} g using (source, source_record_id, base_hash)
            """
        sql.create_table_as(records, derived, temporary=True)
    return int(sql.value(f"select count(*) from {records}"))
