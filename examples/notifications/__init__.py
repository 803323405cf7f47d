"""The notifications example: auth, per-user topics, a background publisher."""
