"""The Spark engine's foundation: DuckDB SQL translated to Spark SQL (dialect.py), the similarity UDFs
DuckDB has and Spark lacks (udfs.py, java/), the `Sql` surface on a SparkSession (runner.py) and the
load-time check of `warehouse.engine: spark` (engine.py). No stage runs on Spark yet."""
