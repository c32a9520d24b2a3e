"""fer-edge dashboard: MQTT -> SQLite/PostgreSQL -> fleet, classroom and driver views (extra ``[dashboard]``)."""
