"""Remote sessions: ``corral host`` (the server) and ``corral.connect`` (the client);
``pie/``: PIE's protocol (pie-client) on the same host. See docs/remote.md and docs/pie.md.
Needs the ``remote`` extra (websockets, blake3; the server also the ``server`` extra)."""
