"""SQL persistence: schema, engine, migrations and bulk loading (SQLite and PostgreSQL)."""
