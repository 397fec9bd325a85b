"""Exports: Bitfinex report CSVs, tax tools' imports, Parquet and CSV; compare."""
