"""The wire: messages, framing over sockets, and the value codec.

Everything here is importable with msgspec alone, because both the host and every
worker (possibly in a different virtualenv) use it.
"""
