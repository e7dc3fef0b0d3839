#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Sends one command to QEMU's QMP socket and prints the answer.

    qmp.py SOCKET COMMAND [KEY=VALUE ...]

Used by run.sh to hot-unplug a disk when a selftest asks for it
(device_del id=hp0). Exits 1 if QEMU answers with an error.
"""
import json
import socket
import sys


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path, command = sys.argv[1], sys.argv[2]
    args = dict(a.split("=", 1) for a in sys.argv[3:])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    f = sock.makefile("rw")

    def call(cmd, arguments=None):
        msg = {"execute": cmd}
        if arguments:
            msg["arguments"] = arguments
        f.write(json.dumps(msg) + "\n")
        f.flush()
        while True:
            reply = json.loads(f.readline())
            if "return" in reply or "error" in reply:
                return reply

    json.loads(f.readline())  # the greeting
    call("qmp_capabilities")
    reply = call(command, args)
    print(json.dumps(reply))
    return 1 if "error" in reply else 0


if __name__ == "__main__":
    sys.exit(main())
