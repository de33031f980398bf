"""The curated schema, shipped with the package so installed copies find it."""
import os

SCHEMA_DIR = os.path.dirname(os.path.abspath(__file__))
SCHEMA_FILE = os.path.join(SCHEMA_DIR, "schema.pbtxt")
