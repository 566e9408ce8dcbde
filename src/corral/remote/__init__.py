"""Remote sessions: ``corral host`` (the server) and ``corral.connect`` (the client).
See docs/remote.md. Needs the ``remote`` extra (websockets, blake3; the server also the
``server`` extra)."""
