"""HTTP and WebSocket routes on one port, sharing one token check."""
