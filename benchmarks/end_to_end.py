"""From one CSV of customer records to identity clusters: this platform against recordlinkage, same file.

    python -m benchmarks.end_to_end [--records 1000000] [--seed 42] [--workdir DIR] [--json OUT]
                                    [--only platform|recordlinkage]

The file (benchmarks/customer_file.py) is N records of demo-generated people with duplicates, households,
common names and typos; its ground truth is kept beside it, not in it. Each pipeline runs as a new user
would run it, in a child process of its own, so that its wall time and peak RSS are its own:

- the platform: a `cdp.yaml` mapping the file as one person source, identity at its defaults, then
  extract, clean (with its Great Expectations check) and identity materialized, exactly as
  benchmarks/identity.py runs them (extract and clean in one process, identity in another);
- recordlinkage: pandas reads the CSV; names, streets and cities go through
  `recordlinkage.preprocessing.clean`, e-mails are lower-cased, phones cut to their last ten digits,
  ZIP codes to five; an e-mail or phone held by more than 20 records is a placeholder ("test@test.com",
  "0000000000"), not an identifier, and is dropped, as anyone would after a look at `value_counts()`.
  The index is the union of four blocks (e-mail; phone; last name and birth date; first name, last name
  and ZIP); the comparison vector is Jaro-Winkler at 0.85 on first name, last name and street, exact on
  birth date, e-mail, phone and ZIP; the unsupervised ECMClassifier decides the links, and connected
  components of the links (scipy) are the clusters. Blocking on last name and ZIP alone, the textbook
  choice, gives 1.7M candidate pairs at 100k records (the demo's cities have one ZIP each) and, growing
  with the square, an estimated 170M at 1M, half an hour or more of comparing on a 2-core machine; the
  blocks above give 81k and 2.7M.

Both pipelines' clusters are scored by `demo.scoring.score` (clustered pairwise precision, recall and F1)
against the same truth: recordlinkage's clusters are written to a scratch DuckDB file in the shape of
`cdp.identity_map`. Totals are the sum of each pipeline's steps, without interpreter start-up or imports;
each child process's wall time is reported too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import yaml

from benchmarks.customer_file import COLUMNS, SOURCE, customer_file
from benchmarks.identity import SEED, _max_rss_mb, measure, run_child
from demo.scoring import score

PLACEHOLDER_SHARE = 20  # an e-mail or phone on more records than this is a placeholder, not a person's
JARO_WINKLER = 0.85


# ----------------------------------------------------------------------------------------------- platform


def platform_config(csv_path: Path, folder: Path) -> Path:
    """The file in a landing folder of its own and the smallest configuration that maps it."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "landing" / SOURCE).mkdir(parents=True)
    shutil.copyfile(csv_path, folder / "landing" / SOURCE / csv_path.name)
    config = {
        "warehouse": {"path": "warehouse.duckdb"},
        "landing": {"path": "landing"},
        "sources": [
            {
                "name": SOURCE,
                "format": "csv",
                "glob": f"{SOURCE}/*.csv",
                "role": "person",
                "record_id": "record_id",
                "fields": {
                    "first_name": "first_name",
                    "last_name": "last_name",
                    "email": "email",
                    "phone": "phone",
                    "address_line1": "address",
                    "city": "city",
                    "postal_code": "postal_code",
                    "date_of_birth": {"path": "date_of_birth", "formats": ["%Y-%m-%d"]},
                },
                "identifiers": [{"path": "email", "type": "email"}, {"path": "phone", "type": "phone"}],
            }
        ],
    }
    config_path = folder / "cdp.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


def bench_platform(csv_path: Path, truth_path: Path, workdir: Path) -> dict[str, Any]:
    """Extract, clean and identity through Dagster, each process measured as benchmarks/identity.py does."""
    config_path = platform_config(csv_path, workdir / "platform")
    figures = measure(config_path, truth_path, [SOURCE])
    steps = {
        "extract": figures["extract_s"],
        "clean": figures["clean_s"],
        "expectations": figures["clean_checks_s"],
        "identity": figures["identity_s"],
    }
    return {
        "steps_s": steps,
        "total_s": round(sum(steps.values()), 3),
        "peak_rss_mb": max(figures["extract_clean_peak_rss_mb"], figures["identity_peak_rss_mb"]),
        "score": figures["person"],
        "checks_passed": figures["checks_passed"],
        "quarantine": figures["quarantine"],
        "extract_clean_peak_rss_mb": figures["extract_clean_peak_rss_mb"],
        "identity_peak_rss_mb": figures["identity_peak_rss_mb"],
        "identity_process_wall_s": figures["identity_process_wall_s"],
        "dagster_steps_s": figures["steps_s"],
    }


# ----------------------------------------------------------------------------------------------- recordlinkage


def _without_placeholders(values: Any) -> Any:
    counts = values.map(values.value_counts())
    return values.where(counts <= PLACEHOLDER_SHARE)


def run_recordlinkage_here(csv_path: Path) -> dict[str, Any]:
    """recordlinkage's whole pipeline on the file, timed step by step; meant to run in a child process."""
    import numpy as np
    import pandas as pd
    import recordlinkage
    from recordlinkage.preprocessing import clean
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    steps: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps[step] = round(now - clock, 3)
        clock = now

    baseline = _max_rss_mb()
    records = pd.read_csv(csv_path, dtype=str, index_col="record_id")
    lap("read")

    df = pd.DataFrame(index=records.index)
    for column in ("first_name", "last_name", "address", "city"):
        df[column] = clean(records[column])
    df["email"] = _without_placeholders(records["email"].str.strip().str.lower())
    digits = records["phone"].str.replace(r"\D", "", regex=True).str[-10:]
    df["phone"] = _without_placeholders(digits.where(digits.str.len() == 10))
    df["postal_code"] = records["postal_code"].str.strip().str[:5]
    df["date_of_birth"] = records["date_of_birth"]
    df = df.replace("", np.nan)
    lap("clean")

    indexer = recordlinkage.Index()
    indexer.block("email")
    indexer.block("phone")
    indexer.block(["last_name", "date_of_birth"])
    indexer.block(["first_name", "last_name", "postal_code"])
    pairs = indexer.index(df)
    lap("index")

    compare = recordlinkage.Compare()
    compare.string("first_name", "first_name", method="jarowinkler", threshold=JARO_WINKLER, label="first_name")
    compare.string("last_name", "last_name", method="jarowinkler", threshold=JARO_WINKLER, label="last_name")
    compare.string("address", "address", method="jarowinkler", threshold=JARO_WINKLER, label="address")
    for column in ("date_of_birth", "email", "phone", "postal_code"):
        compare.exact(column, column, label=column)
    features = compare.compute(pairs, df)
    lap("compare")

    links = recordlinkage.ECMClassifier().fit_predict(features)
    lap("classify")

    position = pd.Series(np.arange(len(df)), index=df.index)
    left = position.loc[links.get_level_values(0)].to_numpy()
    right = position.loc[links.get_level_values(1)].to_numpy()
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(len(df), len(df)))
    _, labels = connected_components(graph, directed=False)
    clusters = pd.DataFrame({"record_id": df.index, "cluster": labels})
    lap("cluster")

    return {
        "steps_s": steps,
        "total_s": round(sum(steps.values()), 3),
        "candidate_pairs": len(pairs),
        "links": len(links),
        "clusters": int(labels.max()) + 1,
        "rss_before_run_mb": baseline,
        "peak_rss_mb": _max_rss_mb(),
        "clusters_frame": clusters,
    }


def _identity_map(clusters_csv: Path, folder: Path) -> Path:
    """recordlinkage's clusters as a `cdp.identity_map`, so demo.scoring scores them as it scores ours."""
    warehouse = folder / "recordlinkage.duckdb"
    warehouse.unlink(missing_ok=True)
    conn = duckdb.connect(str(warehouse))
    try:
        conn.execute("create schema cdp")
        conn.execute(
            """create table cdp.identity_map as
               select ? as source, record_id as source_record_id, 'RL' || cluster as customer_id
               from read_csv(?, all_varchar = true)""",
            [SOURCE, str(clusters_csv)],
        )
    finally:
        conn.close()
    return warehouse


def bench_recordlinkage(csv_path: Path, truth_path: Path, workdir: Path) -> dict[str, Any]:
    """recordlinkage in a fresh child process; its clusters come back as a CSV and are scored here."""
    folder = workdir / "recordlinkage"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    out, clusters_csv = folder / "result.json", folder / "clusters.csv"
    figures = run_child("benchmarks.end_to_end", [str(csv_path), str(out), str(clusters_csv)], out, "recordlinkage")
    figures["score"] = score(str(_identity_map(clusters_csv, folder)), str(truth_path), [SOURCE])
    return figures


def _child(csv_path: Path, out: Path, clusters_csv: Path) -> None:
    figures = run_recordlinkage_here(csv_path)
    figures.pop("clusters_frame").to_csv(clusters_csv, index=False)
    out.write_text(json.dumps(figures))


# ----------------------------------------------------------------------------------------------- report


def _scores(s: dict[str, Any]) -> str:
    return f"P {s['pairwise_precision']:.3f}  R {s['pairwise_recall']:.3f}  F1 {s['pairwise_f1']:.3f}"


def print_report(report: dict[str, Any]) -> None:
    """Per pipeline: total and per-step seconds, peak RSS and clustered scores; then the ratio."""
    data, ours, theirs = report["data"], report["platform"], report["recordlinkage"]
    cached = ", cached" if data["cached"] else ""
    print(
        f"\n{data['records']:,} customer records of {data['people']:,} people in one CSV "
        f"(generated in {data['generate_s']} s{cached}); {data['true_pairs']:,} true pairs"
    )
    print(f"{'pipeline':14s} {'total s':>8s} {'peak RSS':>9s}  clustered pairwise   steps (s)")
    for name, r in (("platform", ours), ("recordlinkage", theirs)):
        steps = ", ".join(f"{step} {seconds}" for step, seconds in r["steps_s"].items())
        print(f"{name:14s} {r['total_s']:8.1f} {r['peak_rss_mb']:6.0f} MB  {_scores(r['score'])}   {steps}")
    print(
        f"recordlinkage: {theirs['candidate_pairs']:,} candidate pairs, {theirs['links']:,} links, "
        f"{theirs['clusters']:,} clusters; child process {theirs['process_wall_s']} s"
    )
    print(
        f"platform: {ours['score']['records_mapped']:,} records mapped; peak RSS extract+clean "
        f"{ours['extract_clean_peak_rss_mb']:.0f} MB, identity {ours['identity_peak_rss_mb']:.0f} MB; "
        f"identity child process {ours['identity_process_wall_s']} s"
    )
    print(f"platform_total / recordlinkage_total = {report['ratio']:.2f}")
    failed = [name for name, passed in ours["checks_passed"].items() if not passed]
    if failed:
        print(f"platform failed checks: {', '.join(failed)}")
    for q in ours["quarantine"]:
        print(f"  quarantined {q['count']:6d}  {q['source']}.{q['field']}: {q['reason']}  e.g. {q['examples']}")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line; `--child` is the internal entry point of recordlinkage's own process."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--workdir", type=Path, default=None, help="kept, with the cached CSV, if given")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--only", choices=("platform", "recordlinkage"), help="run one pipeline, without the ratio")
    parser.add_argument("--child", nargs=3, metavar=("CSV", "OUT", "CLUSTERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*(Path(p) for p in args.child))
        return
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="cdp-bench-e2e-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        csv_path, truth_path, data = customer_file(args.records, args.seed, workdir)
        print(f"data ready: {csv_path}", file=sys.stderr, flush=True)
        if args.only:
            bench = bench_platform if args.only == "platform" else bench_recordlinkage
            figures = bench(csv_path, truth_path, workdir)
            steps = ", ".join(f"{step} {seconds}" for step, seconds in figures["steps_s"].items())
            print(
                f"\n{args.only}: {figures['total_s']:.1f} s, peak RSS {figures['peak_rss_mb']:.0f} MB, "
                f"{_scores(figures['score'])}; {steps}"
            )
            if args.json:
                args.json.write_text(json.dumps({"data": data, args.only: figures}, indent=2, default=str))
            return
        ours = bench_platform(csv_path, truth_path, workdir)
        print(f"platform done in {ours['total_s']} s", file=sys.stderr, flush=True)
        theirs = bench_recordlinkage(csv_path, truth_path, workdir)
        report = {
            "data": {**data, "true_pairs": ours["score"]["true_pairs"], "columns": list(COLUMNS)},
            "platform": ours,
            "recordlinkage": theirs,
            "ratio": ours["total_s"] / theirs["total_s"],
        }
        print_report(report)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
