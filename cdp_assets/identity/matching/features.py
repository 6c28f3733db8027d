"""The per-record features the probabilistic layer blocks and compares on: temp table `match_records`.

Cleaning already normalised names, e-mails, phones, addresses and postal codes; here each person record
(its latest version) gets the forms matching needs: lower-cased names, the formal form of a nickname,
Soundex codes so that typos still meet in a block, the e-mail's local part, a birth date as text for
edit distances, and one non-contact identifier. Derived once per distinct value in Python (a few
hundred thousand names at most), everything else stays in DuckDB.
"""

import duckdb
import jellyfish
import pandas as pd

from cdp_assets.identity.nicknames import canonical_first_name
from resources.config import CDPConfig
from resources.identifiers import contact_kinds


def _name_forms(names: list[str]) -> pd.DataFrame:
    rows = []
    for name in names:
        letters = "".join(ch for ch in name if ch.isalpha())
        rows.append((name, canonical_first_name(name) or name, jellyfish.soundex(letters) if letters else None))
    return pd.DataFrame(rows, columns=["name", "canon", "soundex"], dtype=object)


def build_match_records(conn: duckdb.DuckDBPyConnection, config: CDPConfig) -> int:
    """Rebuild `match_records` from `person_latest` (the latest version of each person record, by node),
    which it drops."""
    kinds = pd.DataFrame(
        [(t, spec.normalize) for t, spec in config.identity.identifier_types.items()], columns=["id_type", "kind"]
    )
    contact_types = kinds[kinds["kind"].isin(contact_kinds())]["id_type"].tolist()
    conn.register("type_kinds", kinds)
    # Junk contact values (test@test.com, 0000000000) agree between strangers; they must not count as
    # evidence here either. Values blocked only for being shared by several people stay: agreeing on a
    # family e-mail is weak evidence the model weighs, and strong conflicts keep the family apart.
    conn.execute(
        """
        create or replace temp table junk_contacts as
        select b.id_value, k.kind from identity.blocked_identifiers b join type_kinds k using (id_type)
        where k.kind in ('email', 'phone') and b.reason not like 'shared by %'
        """
    )
    conn.unregister("type_kinds")
    conn.execute("drop table if exists identity.match_records")  # persisted by earlier versions
    conn.execute(
        """
        create or replace temp table match_base as
        with contacts as (
            select p.*,
                   case when p.email_match_key in (select id_value from junk_contacts where kind = 'email')
                        then null else p.email_match_key end as usable_email,
                   case when p.phone in (select id_value from junk_contacts where kind = 'phone')
                        then null else p.phone end as usable_phone
            from person_latest p
        )
        select p.node_id, p.source, p.source_record_id,
               nullif(lower(trim(p.first_name)), '') as first_name,
               nullif(lower(trim(p.last_name)), '') as last_name,
               p.date_of_birth, p.usable_email as email,
               nullif(split_part(p.usable_email, '@', 1), '') as email_local,
               nullif(regexp_replace(p.usable_phone, '[^0-9]', '', 'g'), '') as phone,
               nullif(lower(trim(p.address_key)), '') as address,
               nullif(lower(regexp_replace(p.postal_code, '\\s', '', 'g')), '') as postal_code,
               nullif(lower(trim(p.city)), '') as city
        from contacts p
        """
    )
    conn.execute("drop table person_latest")
    names = conn.execute(
        "select distinct v from (select unnest([first_name, last_name]) v from match_base) where v is not null"
    ).fetchall()
    conn.register("name_forms", _name_forms([n for (n,) in names]))
    conn.register("contact_types", pd.DataFrame({"id_type": contact_types or ["-"]}))
    conn.execute(
        """
        create or replace temp table match_records as
        with other_ids as (
            select i.source, i.source_record_id, min(i.id_type || ':' || i.id_value) as identifier
            from clean.person_identifiers i
            where i.id_type not in (select id_type from contact_types)
              and not exists (select 1 from identity.blocked_identifiers b
                              where b.id_type = i.id_type and b.id_value = i.id_value)
            group by 1, 2
        )
        select b.node_id, b.source, b.source_record_id,
               b.first_name, f.canon as first_canon, f.canon as first_name_canon, f.soundex as first_name_soundex,
               left(b.first_name, 1) as first_initial,
               b.last_name, l.soundex as last_name_soundex,
               case when b.first_name is not null and b.last_name is not null
                    then least(b.first_name, b.last_name) || ' ' || greatest(b.first_name, b.last_name) end
                   as name_pair,
               b.date_of_birth, strftime(b.date_of_birth, '%Y%m%d') as dob_text,
               year(b.date_of_birth) as birth_year,
               b.email, b.email_local, b.phone, b.address, b.postal_code, b.city,
               o.identifier, split_part(o.identifier, ':', 1) as identifier_type
        from match_base b
        left join name_forms f on f.name = b.first_name
        left join name_forms l on l.name = b.last_name
        left join other_ids o using (source, source_record_id)
        """
    )
    conn.unregister("name_forms")
    conn.unregister("contact_types")
    conn.execute("drop table match_base")
    conn.execute("drop table junk_contacts")
    return int(conn.execute("select count(*) from match_records").fetchall()[0][0])
