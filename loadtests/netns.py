"""Hosts with their own network for the chaos runner: one network namespace per host.

Each host (a node, Redis, the front, the runner's own "ctl" host, where Locust runs
too) gets a namespace `pcn-TAG-HOST` with one veth link to a bridge that lives in a
namespace of its own (`pcn-TAG-hub`), so nothing is created in the machine's own
namespace, and an address in 10.213.0.0/24, which exists only inside the run's
namespaces. Faults are nftables tables (`inet pcn_NAME`) in a host's namespace: a
cut drops its packets to and from some peers (both ways or one way), a lossy link
drops a random share of them (`numgen random`, nftables' form of iptables'
`statistic` match). This kernel has no netem qdisc, so no qdisc is ever created.
Deleting the namespaces removes every link, bridge and rule with them; everything
is named with PREFIX, so `python -m loadtests.netns --cleanup` finds leftovers.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys

PREFIX = "pcn-"
SUBNET = "10.213.0"  # .1 is never used: no gateway, nothing leaves the bridge
CLONE_NEWNET = 0x40000000
TIMEOUT = 10.0


class NetnsError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why this machine cannot give hosts their own network, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add, nft)"
    if shutil.which("ip") is None:
        return "`ip` not found (Debian: apt-get install iproute2)"
    if shutil.which("nft") is None:
        return "`nft` not found (Debian: apt-get install nftables; scripts/system-deps.sh)"
    return None


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise NetnsError(f"{' '.join(argv)}: no answer in {TIMEOUT:g}s") from None
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def namespaces(prefix: str = PREFIX) -> list[str]:
    """Named network namespaces whose name starts with `prefix`."""
    out = _run(["ip", "netns", "list"])
    return sorted(name for line in out.splitlines()
                  if (name := line.split(" ", 1)[0]).startswith(prefix))


def cleanup(prefix: str = PREFIX) -> list[str]:
    """Delete every namespace named with `prefix` (links, bridge and rules go with them)."""
    gone = []
    for name in namespaces(prefix):
        try:
            _run(["ip", "netns", "del", name])
            gone.append(name)
        except NetnsError:
            continue
    return gone


def _chain(hook: str, rule: str) -> str:
    return (f"  chain {hook} {{\n    type filter hook {hook} priority 0;\n    {rule}\n"
            f"  }}\n")


def _table(name: str, chains: list[str]) -> str:
    return f"table inet pcn_{name} {{\n{''.join(chains)}}}\n"


class Network:
    """The namespaces of one run: a hub with the bridge, and one namespace per host."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.prefix = f"{PREFIX}{tag}-"
        self.hub = f"{self.prefix}hub"
        self.addresses: dict[str, str] = {}  # host -> address

    def ns(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def start(self) -> Network:
        _run(["ip", "netns", "add", self.hub])
        _run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.hub, "link", "set", "br0", "up"])
        return self

    def add_host(self, host: str) -> str:
        """A namespace for `host`, linked to the bridge; returns its address."""
        if host in self.addresses:
            return self.addresses[host]
        if len(self.addresses) >= 250:
            raise NetnsError("no address left in the run's /24")
        ns, port = self.ns(host), f"v-{host}"[:15]
        address = f"{SUBNET}.{len(self.addresses) + 2}"
        _run(["ip", "netns", "add", ns])
        # Both ends are created inside their namespaces: no name in the machine's own.
        _run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
              "netns", self.hub])
        _run(["ip", "-n", self.hub, "link", "set", port, "master", "br0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self.addresses[host] = address
        return address

    def wrap(self, host: str) -> list[str]:
        """The argv prefix that runs a command in the host's namespace (it execs: the
        pid is the command's, so the process tracker follows it)."""
        return ["ip", "netns", "exec", self.ns(host)]

    def enter(self, host: str) -> None:
        """Move the calling thread (call it before any other thread starts: the runner's
        own connections and children then belong to `host`)."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.ns(host)}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise NetnsError(f"setns into {self.ns(host)}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)

    # -- faults: one nftables table each, in the host's namespace ---------------------------

    def _nft(self, host: str, script: str) -> None:
        _run([*self.wrap(host), "nft", "-f", "-"], stdin=script)

    def cut(self, host: str, name: str, peers: list[str], *, inbound: bool = True,
            outbound: bool = True) -> None:
        """Drop the host's packets to (outbound) and from (inbound) the peers' addresses."""
        if not peers or not (inbound or outbound):
            raise NetnsError("a cut needs peers and a direction")
        addresses = ", ".join(peers)
        chains = []
        if inbound:
            chains.append(_chain("input", f"ip saddr {{ {addresses} }} drop"))
        if outbound:
            chains.append(_chain("output", f"ip daddr {{ {addresses} }} drop"))
        self._nft(host, _table(name, chains))

    def lose(self, host: str, name: str, percent: int) -> None:
        """Drop `percent`% of the host's packets on its link, each way, at random."""
        if not 0 < percent < 100:
            raise NetnsError(f"loss must be within 1..99%, not {percent}")
        self._nft(host, _table(name, [
            _chain("input", f'iifname "eth0" numgen random mod 100 < {percent} drop'),
            _chain("output", f'oifname "eth0" numgen random mod 100 < {percent} drop')]))

    def redirect(self, host: str, name: str, peers: list[str], port: int, mark: int) -> None:
        """Send the host's TCP connections to the peers to 127.0.0.1:port in its own
        namespace (a transparent proxy there), except those carrying `mark` (the
        proxy's own): how a latency proxy is put on a path without changing any URL."""
        rule = (f"meta mark != {mark:#x} ip daddr {{ {', '.join(peers)} }} "
                f"meta l4proto tcp redirect to :{port}")
        self._nft(host, f"table ip pcn_{name} {{\n  chain output {{\n    type nat hook output "
                        f"priority -100;\n    {rule}\n  }}\n}}\n")

    def heal(self, host: str, name: str) -> None:
        try:
            _run([*self.wrap(host), "nft", "delete", "table", "inet", f"pcn_{name}"])
        except NetnsError:
            pass  # already gone (the host's namespace too, at the end)

    def rules(self, host: str) -> str:
        return _run([*self.wrap(host), "nft", "list", "ruleset"])

    def close(self) -> list[str]:
        """Delete every namespace of this run; returns those still there (none, normally)."""
        cleanup(self.prefix)
        return namespaces(self.prefix)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.netns",
                                description="List or delete the chaos runner's namespaces.")
    p.add_argument("--cleanup", action="store_true",
                   help=f"delete every network namespace named {PREFIX}* (leftovers of a "
                        f"killed run)")
    args = p.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"netns: {reason}", file=sys.stderr)
        return 2
    names = cleanup() if args.cleanup else namespaces()
    for name in names:
        print(("deleted " if args.cleanup else "") + name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
