"""The chat example: rooms, a ping RPC, validation errors, and a browser page."""
