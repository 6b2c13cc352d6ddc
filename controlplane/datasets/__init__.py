"""Datasets: uploads ingested into normalized, hashed Parquet versions, and the operations on them."""
