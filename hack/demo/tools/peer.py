#!/usr/bin/env python3
"""A TCP echo of the peer's address, for the demo's NAT checks (run inside a namespace).

  peer.py serve ADDR PORT   accept forever; answer each connection with the client address
  peer.py ask ADDR PORT     connect (2 s timeout), print what the server answered
"""
import socket
import sys


def serve(addr, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen()
    while True:
        c, peer = s.accept()
        c.sendall(peer[0].encode())
        c.close()


def ask(addr, port):
    with socket.create_connection((addr, port), timeout=2) as s:
        print(s.recv(64).decode())


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("serve", "ask"):
        sys.exit(__doc__)
    {"serve": serve, "ask": ask}[sys.argv[1]](sys.argv[2], int(sys.argv[3]))
