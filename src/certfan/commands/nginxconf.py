"""nginx's full configuration (``nginx -T``) as the server blocks doctor and audit read.

Pure: text in, :class:`ServerBlock` out. ``nginx -T`` prints every file it
read, each after a ``# configuration file PATH:`` line; an included file's
text comes on its own, so a server block in ``sites/*.conf`` stands at the
top of its file although nginx sees it inside ``http {}``. ``ssl_certificate``
set outside any server block is what servers without their own inherit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

_FILE_HEADER = re.compile(r"^# configuration file (.+):$")
_TOKEN = re.compile(r"""#[^\n]*|"((?:\\.|[^"\\])*)"|'((?:\\.|[^'\\])*)'|([{};])|([^\s{};"'#]+)""")


@dataclass(frozen=True)
class ServerBlock:
    file: str  # the configuration file it is in
    line: int  # of the ``server`` keyword in that file
    names: tuple[str, ...]  # server_name values, as written
    certificates: tuple[str, ...]  # ssl_certificate paths (own, else inherited)
    keys: tuple[str, ...]  # ssl_certificate_key paths, in the same order
    listens: tuple[str, ...] = field(default=())  # each listen directive, joined

    @property
    def tls(self) -> bool:
        return bool(self.certificates) or any(" ssl" in f" {listen}" for listen in self.listens)


def dump_argv(config_test: Sequence[str]) -> tuple[str, ...]:
    """The command printing nginx's full configuration, run the way the config test is
    (``sudo -n nginx -t`` -> ``sudo -n nginx -T``); ``nginx -T`` when it cannot tell."""
    argv = list(config_test)
    if "-t" in argv:
        return tuple("-T" if word == "-t" else word for word in argv)
    for i, word in enumerate(argv):
        if word.rsplit("/", 1)[-1] == "nginx":
            return (*argv[: i + 1], "-T")
    return ("nginx", "-T")


def server_blocks(dump: str) -> list[ServerBlock]:
    """Every ``server { }`` block with its names and certificate files."""
    blocks: list[ServerBlock] = []
    inherited_certs: list[str] = []
    inherited_keys: list[str] = []
    for path, text in _files(dump):
        for found, certs, keys in _blocks_in(path, text):
            blocks.extend(found)
            inherited_certs += certs
            inherited_keys += keys
    if not inherited_certs:
        return blocks
    return [
        ServerBlock(b.file, b.line, b.names, tuple(inherited_certs), tuple(inherited_keys),
                    b.listens) if b.tls and not b.certificates else b
        for b in blocks
    ]


def _files(dump: str) -> Iterator[tuple[str, str]]:
    path, lines = "(nginx -T)", list[str]()
    for line in dump.splitlines():
        header = _FILE_HEADER.match(line)
        if header:
            if lines:
                yield path, "\n".join(lines)
            path, lines = header.group(1), []
        else:
            lines.append(line)
    if lines:
        yield path, "\n".join(lines)


@dataclass
class _Server:
    line: int
    names: list[str] = field(default_factory=list)
    certs: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    listens: list[str] = field(default_factory=list)


def _tokens(text: str) -> Iterator[tuple[str, int, bool]]:
    """(token, line, is a bare word or string) for each token, comments left out."""
    for m in _TOKEN.finditer(text):
        if m.group(0).startswith("#"):
            continue
        line = text.count("\n", 0, m.start()) + 1
        quoted = m.group(1) if m.group(1) is not None else m.group(2)
        if quoted is not None:
            yield quoted, line, True
        elif m.group(3):
            yield m.group(3), line, False
        else:
            yield m.group(4), line, True


def _blocks_in(path: str, text: str) -> Iterator[tuple[list[ServerBlock], list[str], list[str]]]:
    """The server blocks of one file; and the certificates set outside any server."""
    stack: list[_Server | None] = []  # one entry per open block: the server it is, or None
    words: list[str] = []
    first_line = 0
    blocks: list[ServerBlock] = []
    outside_certs: list[str] = []
    outside_keys: list[str] = []
    for token, line, word in _tokens(text):
        if word:
            if not words:
                first_line = line
            words.append(token)
            continue
        if token == "{":
            is_server = bool(words) and words[0] == "server"
            stack.append(_Server(first_line) if is_server else None)
        elif token == ";" and words:
            server = next((s for s in reversed(stack) if s is not None), None)
            depth_ok = server is not None and stack[-1] is server  # not in a location {}
            target_certs = server.certs if depth_ok and server else outside_certs
            target_keys = server.keys if depth_ok and server else outside_keys
            name, args = words[0], words[1:]
            if name == "server_name" and depth_ok and server:
                server.names += args
            elif name == "listen" and depth_ok and server:
                server.listens.append(" ".join(args))
            elif name == "ssl_certificate" and args and (depth_ok or server is None):
                target_certs.append(args[0])
            elif name == "ssl_certificate_key" and args and (depth_ok or server is None):
                target_keys.append(args[0])
        elif token == "}" and stack:
            closed = stack.pop()
            if closed is not None:
                blocks.append(ServerBlock(path, closed.line, tuple(closed.names),
                                          tuple(closed.certs), tuple(closed.keys),
                                          tuple(closed.listens)))
        words = []
    yield blocks, outside_certs, outside_keys
