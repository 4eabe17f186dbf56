"""Sans-IO HTTP/1.1 for Polycorn: bytes in, events out; responses in, bytes out.

``connection.ServerConnection`` is the entry point; it never touches a socket.
"""
