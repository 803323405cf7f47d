"""The binary stream example: audio-style chunks in binary frames, with JSON control."""
