"""The agent's durable state: SQLite (WAL, full sync) with a versioned schema migrated in place."""
