"""smtp-source -> Postfix -> smtp-sink, without a milter and with bouncekeeper's, in the same run.

One private Postfix instance (tests/support/postfix.py) with one smtpd listener per variant, so every
variant shares the same queue, disks and CPU state:

- `none`: no milter (the baseline);
- `unix`: the bouncekeeper milter on a unix socket; `inet`: the same milter on TCP (inet:PORT@127.0.0.1);
- `routed`: the routed set-up (postfix/routed/, applied from its files): the MX listener has no milter,
  only a check_recipient_access lookup that would send the bounce domain and the protected address to the
  policy service; its `verp` traffic comes through the set-up's own application listener (the milter);
- `control`: a second listener without a milter, configured like `none`: the spread between the two is
  the run's noise;
- `app`: outbound mail whose sender the application signed itself (docs/verp-spec.md), through a
  submission listener without any milter; `appmap`: the same mail through a listener that has the
  milter in `smtpd_milters` but turns it off for the application's address with `smtpd_milter_maps`
  (`127.0.0.1/32 DISABLE`). Both carry the same signed sender, checked in the maillog;
- traffic `inbound`: ordinary inbound mail (the milter accepts it at DATA, header and body never reach
  it); traffic `verp`: originating mail (the listener's {daemon_name} is ORIGINATING) that gets a signed
  VERP sender via chgfrom at end of message.

Rounds rotate the order of the variants, and each variant starts once the pipeline's CPU use of the
previous one has died down (`settle`): work a heavy variant leaves behind is not billed to the next one.
Throughput is measured as smtp-source's wall time to hand all messages to Postfix (what a milter slows
down: smtpd waits for its answers), then the queue is drained before the next run. Prints msgs/s and the
ratio to `none` at the same concurrency. Needs root (postfix), smtp-source, redis-server.

Wall-clock ratios swing with whatever else the machine runs. So the script also puts itself, and with it
everything it starts (Postfix, the milters, Redis, smtp-source, smtp-sink), into a cgroup of its own and
reads the CPU time the whole pipeline spent per message (`pipe`, µs). On a machine whose CPUs the mail
pipeline saturates, `none`'s pipe / a variant's pipe is the throughput ratio to expect (`cpu-ratio`);
other processes' load does not enter it. Without a writable cgroup (not root, or a locked-down cgroup
tree) those columns say n/a.

    .venv/bin/python benchmarks/postfix_throughput.py [--messages 2000] [--inet-messages 400]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "milter")]

from tests.support.milter import MilterProcess  # noqa: E402
from tests.support.postfix import Postfix, Routed, SmtpSink, free_port  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

from bouncekeeper.verpkeys import Signer  # noqa: E402

SENDERS = {"inbound": "someone@remote.example", "verp": "app@example.org"}
RCPT = "user@elsewhere.example"
BOUNCE_DOMAIN = "bounces.example.org"
PROTECTED = "app-in@example.org"


def start_milter(
    workdir: pathlib.Path, socket: str, redis_url: str, name: str, extra: str = ""
) -> MilterProcess:
    key = workdir / "verp.key"
    if not key.exists():
        key.write_bytes(os.urandom(24).hex().encode())
    toml = f"""[log]
level = "WARNING"
[redis]
url = "{redis_url}"
[policy]
mode = "enforce"
[verp]
bounce_domain = "{BOUNCE_DOMAIN}"
secret_files = ["{key}"]
senders = ["{SENDERS["verp"]}"]
[milter]
# 127.0.0.1 is where smtp-source connects from: keep it inbound; ORIGINATING marks the verp listener.
originating_networks = []
originating_daemons = ["ORIGINATING"]
protected_recipients = ["{PROTECTED}"]
{extra}
"""
    return MilterProcess(workdir, socket, toml, name).start()


def sender_of(listener: str, app_sender: str) -> str:
    """The envelope sender smtp-source uses on a listener: the application's signed one on app*."""
    if listener.startswith("app"):
        return app_sender
    return SENDERS["verp" if "verp" in listener else "inbound"]


def drain(postfix: Postfix, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while postfix.queue():
        if time.monotonic() > deadline:
            raise RuntimeError("queue did not drain")
        time.sleep(0.2)


class FloorMilter:
    """benchmarks/floor_milter.py: pymilter doing nothing in the same protocol steps."""

    def __init__(self, socket: str, log: pathlib.Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "floor_milter.py"), socket, *extra],
            stderr=log.open("wb"),
        )
        path = pathlib.Path(socket.removeprefix("unix:"))
        deadline = time.monotonic() + 15
        while not path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"floor milter did not start: {log.read_text()}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/PID/stat fields 14 and 15, in clock ticks)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PipelineCpu:
    """CPU time of this process and everything it starts, from a cgroup made for the run.

    cgroup v1 (`cpuacct.usage`, ns) or v2 (`cpu.stat` usage_usec). Children inherit the cgroup, so
    Postfix's daemons, the milters and the SMTP tools are all counted, and nothing else is.
    """

    def __init__(self) -> None:
        self.dir: pathlib.Path | None = None
        name = f"bk-bench-{os.getpid()}"
        v1 = pathlib.Path("/sys/fs/cgroup/cpuacct")
        if (v1 / "cpuacct.usage").exists():
            candidates = [v1 / name]
        else:
            own = pathlib.Path("/proc/self/cgroup").read_text().splitlines()
            unified = [line.split("::", 1)[1] for line in own if line.startswith("0::")]
            candidates = [pathlib.Path("/sys/fs/cgroup") / unified[0].lstrip("/") / name] if unified else []
        for path in candidates:
            try:
                path.mkdir()
                (path / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                continue
            self.dir = path

    def usage_us(self) -> float | None:
        if self.dir is None:
            return None
        if (self.dir / "cpuacct.usage").exists():
            return int((self.dir / "cpuacct.usage").read_text()) / 1000
        stat = dict(line.split() for line in (self.dir / "cpu.stat").read_text().splitlines())
        return float(stat["usage_usec"])

    def close(self) -> None:
        if self.dir is None:
            return
        try:
            (self.dir.parent / "cgroup.procs").write_text(str(os.getpid()))
            self.dir.rmdir()
        except OSError:
            pass  # a straggling child keeps it; an empty cgroup left behind costs nothing


def settle(pipeline: PipelineCpu, timeout: float = 10.0) -> None:
    """Wait until what the previous variant started has finished its work (under 5% of a core over
    0.25 s), so that it is not billed to the next one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = pipeline.usage_us()
        time.sleep(0.25)
        after = pipeline.usage_us()
        if before is None or after is None or after - before < 0.05 * 250_000:
            return


def blast(port: int, sender: str, messages: int, sessions: int, reuse: bool = False) -> float:
    start = time.monotonic()
    subprocess.run(
        ["smtp-source", *(["-d"] if reuse else []), "-s", str(sessions), "-m", str(messages), "-l", "2000",
         "-f", sender, "-t", RCPT, f"127.0.0.1:{port}"],
        check=True, timeout=600,
    )  # fmt: skip
    return messages / (time.monotonic() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="smtp-source -d: each session sends all its messages over one connection (bulk senders do;"
        " without it, one message per connection, as most senders to an MX)",
    )
    parser.add_argument("--inet-messages", type=int, default=300, help="TCP is slow; fewer messages")
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--transports",
        nargs="+",
        default=["unix", "floor", "inet"],
        choices=["unix", "floor", "connect", "inet", "routed", "control", "app", "appmap"],
        help="floor: a pymilter milter doing nothing in the same steps (unix socket); connect: one that"
        " accepts every session at CONNECT, the least any milter can cost (inbound traffic only);"
        " routed: postfix/routed/ (no milter on the MX listener); control: a second listener without any"
        " milter, the same as the baseline: how far apart two identical variants land is the noise; app:"
        " application-signed VERP senders through a listener without the milter; appmap: the same through"
        " the milter's listener, the milter disabled for the client by smtpd_milter_maps",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("postfix_throughput: needs root (the postfix command)", file=sys.stderr)
        return 1
    pipeline = PipelineCpu()
    try:
        return run(args, pipeline)
    finally:
        pipeline.close()


def run(args: argparse.Namespace, pipeline: PipelineCpu) -> int:
    with tempfile.TemporaryDirectory(prefix="bk-bench-") as tmp:
        work = pathlib.Path(tmp)
        work.chmod(0o755)
        redis = RedisServer(work / "redis")
        redis.start()
        unix_socket = f"unix:{work}/milter.sock"
        inet_port = free_port()
        floor_socket = f"unix:{work}/floor.sock"
        postfix = Postfix(
            work / "postfix",
            relay_port=0,
            milter_socket=unix_socket,
            listeners={},
            settings={"default_process_limit": "200", "smtpd_client_connection_count_limit": "0"},
            routed=Routed(policy_socket=f"unix:{work}/policy.sock", watched=(BOUNCE_DOMAIN, PROTECTED)),
        )
        policy = f'policy_socket = "unix:{work}/policy.sock"\n'
        policy += f'policy_filter = "bouncekeeper:[127.0.0.1]:{postfix.ports["after-queue"]}"'
        milters: dict[str, MilterProcess | FloorMilter] = {
            "unix": start_milter(work, unix_socket, redis.url, "unix", policy),
            "inet": start_milter(work, f"inet:{inet_port}@127.0.0.1", redis.url, "inet"),
            "floor": FloorMilter(floor_socket, work / "floor.log"),
            "connect": FloorMilter(f"unix:{work}/connect.sock", work / "connect.log", "connect"),
        }
        milters["routed"] = milters["unix"]  # the same daemon serves the routed set-up's listeners
        # smtpd_milter_maps disables that daemon for appmap's client: its CPU column shows that it is idle.
        milters["appmap"] = milters["unix"]
        sink = SmtpSink(work / "sink", dump=False).start()
        # What the application signs itself, with the milter's own key (written by start_milter); its
        # context keeps it apart from the address the milter signs for the same recipient in the maillog.
        signer = Signer.from_key_files([str(work / "verp.key")], BOUNCE_DOMAIN)
        app_sender = signer.address_for(RCPT, context="app")
        milter_map = work / "milter_map.cidr"
        milter_map.write_text("127.0.0.1/32 DISABLE\n")
        orig = {"milter_macro_daemon_name": "ORIGINATING"}
        # The instance is the routed set-up (its MX listener is `smtp`, its application listener
        # `submission`); every other listener names its milter and drops the routed recipient check, so
        # the baseline is Postfix alone.
        plain = {"smtpd_recipient_restrictions": ""}
        listeners = {
            "none": {"smtpd_milters": ""},
            "control-inbound": {"smtpd_milters": ""},
            "unix-inbound": {"smtpd_milters": unix_socket},
            "unix-verp": {"smtpd_milters": unix_socket, **orig},
            "floor-inbound": {"smtpd_milters": floor_socket},
            "floor-verp": {"smtpd_milters": floor_socket, **orig},
            "connect-inbound": {"smtpd_milters": f"unix:{work}/connect.sock"},
            "inet-inbound": {"smtpd_milters": f"inet:127.0.0.1:{inet_port}"},
            "inet-verp": {"smtpd_milters": f"inet:127.0.0.1:{inet_port}", **orig},
            "app-verp": {"smtpd_milters": ""},
            "appmap-verp": {"smtpd_milters": unix_socket, "smtpd_milter_maps": f"cidr:{milter_map}", **orig},
        }
        listeners = {name: {**plain, **overrides} for name, overrides in listeners.items()}
        postfix.relay_port = sink.port
        postfix.listeners.update(listeners)
        postfix.ports.update({name: free_port() for name in listeners})
        postfix.ports["routed-inbound"] = postfix.ports["smtp"]
        postfix.ports["routed-verp"] = postfix.ports["submission"]
        postfix.start()
        try:
            # Warm up every path once (process start-up, the milter's first connections).
            sent_verp = 0
            routed = ["routed-inbound", "routed-verp"] if "routed" in args.transports else []
            sent_app = 0
            for name in [*listeners, *routed]:
                blast(postfix.ports[name], sender_of(name, app_sender), 50, 5)
                sent_verp += 50 if "verp" in name else 0
                sent_app += 50 if name.startswith("app") else 0
            drain(postfix)
            variants = [("none", "inbound", "none")] + [
                (f"{t}-{traffic}", traffic, t)
                for t in args.transports
                for traffic in ("inbound", "verp")
                if f"{t}-{traffic}" in postfix.ports
            ]
            head = "sessions  traffic milter   msgs   msgs/s  ratio    cpu   pipe cpu-ratio"
            print(
                f"{head}\n(medians of {args.rounds} rounds; cpu = the milter's CPU µs per message; pipe = the"
                " whole pipeline's CPU µs per message; cpu-ratio = none's pipe / this pipe)"
            )
            for sessions in args.sessions:
                rates: dict[str, list[float]] = {name: [] for name, _t, _m in variants}
                ratios: dict[str, list[float]] = {name: [] for name, _t, _m in variants}
                cpu: dict[str, list[float]] = {name: [] for name, _t, _m in variants}
                pipe: dict[str, list[float]] = {name: [] for name, _t, _m in variants}
                # Rounds interleave the variants: a load change on the machine hits all of them alike,
                # and each ratio is taken against the baseline of its own round.
                # Each round starts the rotation one variant later: a variant that runs right after a heavy
                # one (Postfix's and the milter's leftover work) is not always the same one.
                for round_no in range(args.rounds):
                    shift = round_no % len(variants)
                    this_round: dict[str, float] = {}
                    for name, traffic, transport in variants[shift:] + variants[:shift]:
                        settle(pipeline)
                        count = args.inet_messages if transport == "inet" else args.messages
                        milter = milters.get(transport)
                        before = cpu_seconds(milter.pid) if milter else 0.0
                        pipe_before = pipeline.usage_us()
                        rate = blast(
                            postfix.ports[name], sender_of(name, app_sender), count, sessions, args.reuse
                        )
                        sent_verp += count if traffic == "verp" and transport != "none" else 0
                        sent_app += count if transport.startswith("app") else 0
                        # The milter's own CPU per message: a figure the machine's other load cannot skew.
                        cpu[name].append((cpu_seconds(milter.pid) - before) / count * 1e6 if milter else 0.0)
                        drain(postfix)
                        # Until the queue is empty: delivery to smtp-sink is part of every variant's cost.
                        pipe_after = pipeline.usage_us()
                        if pipe_before is not None and pipe_after is not None:
                            pipe[name].append((pipe_after - pipe_before) / count)
                        this_round[name] = rate
                        rates[name].append(rate)
                    for name, rate in this_round.items():
                        ratios[name].append(rate / this_round["none"])
                for name, traffic, transport in variants:
                    count = args.inet_messages if transport == "inet" else args.messages
                    shown = traffic if transport != "none" else "any"
                    rate, ratio = statistics.median(rates[name]), statistics.median(ratios[name])
                    used = statistics.median(cpu[name])
                    row = f"{sessions:>8} {shown:>8} {transport:>6} {count:>6} {rate:>8.0f} {ratio:>6.2f}"
                    if pipe[name] and pipe["none"]:
                        spent = statistics.median(pipe[name])
                        extra = f" {spent:>6.0f} {statistics.median(pipe['none']) / spent:>9.2f}"
                    else:
                        extra = "    n/a       n/a"
                    print(f"{row} {used:>6.0f}{extra}")
            delivered = postfix.log().count("status=sent")
            verp = postfix.log().count("from=<bounces+")
            app = postfix.log().count(f"from=<{app_sender}>")
            # A check on the run itself: exactly the originating traffic got a VERP sender, and the
            # application's own signed sender went out as it came in.
            print(f"(maillog: {delivered} delivered, {verp} with a VERP sender, {sent_verp} expected)")
            print(f"(maillog: {app} with the application's own signed sender, {sent_app} expected)")
            if verp != sent_verp or app != sent_app:
                print(
                    "postfix_throughput: the VERP count is wrong: the milter misjudged traffic",
                    file=sys.stderr,
                )
                return 1
        finally:
            postfix.stop()
            sink.stop()
            for milter in milters.values():
                milter.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
