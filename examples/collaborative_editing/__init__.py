"""The collaborative editing example: a document topic, edits broadcast, state on connect."""
