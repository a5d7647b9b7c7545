"""Serves a page over HTTP; as a task (with /in and /out), counts the words of each input."""
import pathlib
import platform
import socket

IN, OUT = pathlib.Path('/in'), pathlib.Path('/out')

if IN.is_dir() and OUT.is_dir():
    with open(OUT / 'words.txt', 'w', encoding='utf-8') as out:
        for f in sorted(p for p in IN.rglob('*') if p.is_file()):
            out.write(f'{f.relative_to(IN)} {len(f.read_bytes().split())}\n')
    raise SystemExit(0)

body = f'hello from Python {platform.python_version()} on Debian\n'.encode()
head = f'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nServer: python-app\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n'.encode()
with socket.create_server(('0.0.0.0', 8000)) as server:
    while True:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(head + body)
