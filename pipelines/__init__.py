"""Ray glue: ingest (Ray Data → Parquet), train (Ray Train), screen (Ray Data inference)."""
