"""``make demo``: a three-bolt spanner federation on loopback, with envoys.

Starts three ``twistd -n vigo --mode=spanner`` servers (bolts a, b and c, data
under ./var/demo), founds the federation on a, invites and joins b and c,
enrolls simulated envoys at each bolt for the hostnames it owns, shows the
federation as any bolt sees it, drains bolt c into bolt b while the envoys
check in; gives bolt a a standby (a2: high availability inside its
partition), kills bolt a with SIGKILL, promotes a2 and shows a's envoys and
the other bolts following it; then keeps running and says what to try.
Ctrl-C stops everything it started.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
DEMO = os.path.join(ROOT, "var", "demo")
BOLTS = ("a", "b", "c")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(text):
    print("\n\033[1m==> %s\033[0m" % (text,), flush=True)


def tool(*argv, capture=False):
    if not capture:
        print("$ " + " ".join(os.path.relpath(a) if a.startswith(DEMO) else a for a in argv),
              flush=True)
    result = subprocess.run([os.path.join(BIN, argv[0])] + list(argv[1:]), check=True,
                            capture_output=capture, text=True)
    return result.stdout


def cli(bolt, *args, capture=False):
    return tool("vigocli", "--data-dir", os.path.join(DEMO, bolt, "data"), *args,
                capture=capture)


def write_config(bolt, group, gossip_port, name=None, peers=False):
    directory = os.path.join(DEMO, bolt)
    os.makedirs(directory)
    name = name or bolt
    config = {
        "server": {"data_dir": "data", "hostname": "localhost",
                   "envoy_listen": "127.0.0.1:%d" % free_port(),
                   "api_listen": "127.0.0.1:%d" % free_port()},
        "checkin": {"interval": "5s"},
        "spanner": {"mode": "spanner", "bolt_name": name,
                    "patterns": ["*.%s.example.com" % name],
                    "peer_listen": "127.0.0.1:%d" % free_port(),
                    "gossip": {"group": group, "port": gossip_port, "interface": "127.0.0.1"}},
    }
    if peers:  # high availability: the replication port (docs/ha.md)
        config["peers"] = {"listen": "127.0.0.1:%d" % free_port(), "sync": 0}
    path = os.path.join(directory, "server.yaml")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)  # JSON is YAML
    return path


def start(bolt, config):
    log = open(os.path.join(DEMO, bolt, "server.log"), "wb")
    process = subprocess.Popen(
        [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "vigo", "--config", config],
        stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(config))
    run_file = os.path.join(DEMO, bolt, "data", "run.json")
    deadline = time.monotonic() + 60
    while not os.path.exists(run_file):
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit("bolt %s did not start; see %s" % (bolt, log.name))
        time.sleep(0.1)
    with open(run_file) as f:
        return process, json.load(f)


def wait_for(what, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit("gave up waiting for %s" % (what,))
        time.sleep(0.3)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envoys", type=int, default=100, help="simulated envoys per bolt")
    parser.add_argument("--no-wait", action="store_true", help="stop everything at the end")
    args = parser.parse_args()

    shutil.rmtree(DEMO, ignore_errors=True)
    group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
    gossip_port = free_port(socket.SOCK_DGRAM)
    processes, runs = {}, {}
    try:
        say("starting three bolts: twistd -n vigo --mode=spanner (gossip on %s:%d, loopback)"
            % (group, gossip_port))
        for bolt in BOLTS:
            processes[bolt], runs[bolt] = start(
                bolt, write_config(bolt, group, gossip_port, peers=bolt == "a"))
            print("bolt %s: %s, API %s" % (bolt, runs[bolt]["server_id"], runs[bolt]["api_url"]))

        say("bolt a founds the federation")
        cli("a", "spanner", "init")
        for bolt in ("b", "c"):
            say("bolt a invites bolt %s, which joins with the one-shot token" % (bolt,))
            token = cli("a", "spanner", "bolt", "invite", "--expires-in", "10m",
                        capture=True).strip()
            print(token[:60] + "...")
            cli(bolt, "spanner", "bolt", "join", token)

        say("every bolt hears the others (gossip) and holds the same roster")
        wait_for("gossip", lambda: all(
            json.loads(cli(b, "--json", "spanner", "status", capture=True))["peers"]["alive"] == 2
            for b in BOLTS))
        cli("c", "spanner", "bolt", "list")

        say("bolt a gets a standby, a2: a fresh server joins its replica set (docs/ha.md)")
        processes["a2"], runs["a2"] = start(
            "a2", write_config("a2", group, gossip_port, name="a", peers=True))
        token = cli("a", "server", "standby", "invite", "--expires-in", "10m",
                    capture=True).strip().splitlines()[-1]
        cli("a2", "server", "standby", "join", token)
        wait_for("a2's base copy", lambda: json.loads(cli(
            "a2", "--json", "server", "status", capture=True)).get("streaming"))
        cli("a", "server", "status")

        say("%d simulated envoys per bolt, each enrolled at the bolt that owns its hostname"
            % (args.envoys,))
        sims = []
        for bolt in BOLTS:
            token = json.loads(cli(bolt, "--json", "token", "create", "--uses",
                                   str(args.envoys), capture=True))["token"]
            sims.append(subprocess.Popen(
                [os.path.join(BIN, "vigo-envoy"), "sim", "--server",
                 runs[bolt]["envoy_address"], "--token", token, "--count", str(args.envoys),
                 "--interval", "5s", "--duration", "75s", "--hostname-template",
                 "web{n}.%s.example.com" % (bolt,)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for("enrollment", lambda: all(
            json.loads(cli(b, "--json", "status", capture=True))["envoys"]["connected"]
            >= args.envoys for b in BOLTS), timeout=60)
        time.sleep(1.5)  # a few gossip rounds carry the new counters
        say("the federation as bolt b sees it: envoy counts come from gossip")
        cli("b", "spanner", "bolt", "list")
        say("asked at bolt a: force-push an envoy that bolt c owns (found by PB fan-out)")
        cli("a", "envoys", "push", "web1.c.example.com")
        say("a peer action, asked at bolt a, run on bolt c (Perspective Broker, mutual TLS)")
        cli("a", "spanner", "bolt", "act", "c", "ping")

        say("draining bolt c into bolt b, asked at bolt a: its envoys move without re-enrolling")
        cli("a", "spanner", "bolt", "drain", "c", "--to", "b")
        time.sleep(6)  # a check-in interval: the moved envoys check in at b
        say("bolt c is draining and empty; its envoys check in at bolt b")
        cli("a", "spanner", "bolt", "list")

        say("bolt a dies (SIGKILL); its standby a2 is promoted and serves as bolt a")
        print("$ kill -9 %d    # bolt a" % (processes["a"].pid,), flush=True)
        processes["a"].kill()  # by the PID this demo started
        processes["a"].wait()
        cli("a2", "server", "promote")
        say("a's envoys fail over to a2 (their replica list), as the same envoys")
        wait_for("a's envoys at a2", lambda: json.loads(cli(
            "a2", "--json", "status", capture=True))["envoys"]["connected"] >= args.envoys,
            timeout=60)
        cli("a2", "status")
        say("the other bolts route to bolt a at a2's addresses (its row, republished)")
        wait_for("a's new row at b", lambda: json.loads(cli(
            "b", "--json", "spanner", "bolt", "show", "a", capture=True)).get("addresses", {})
            .get("api") == runs["a2"]["api_url"].split("//", 1)[1], timeout=30)
        cli("b", "spanner", "bolt", "list")
        for sim in sims:
            sim.wait()

        say("what to try next")
        print("vigocli --data-dir var/demo/a2/data server status   # a2: bolt a's primary now")
        print("twistd -n vigo --config var/demo/a/server.yaml   # the old a comes back fenced, "
              "as a2's standby")
        print("vigocli --data-dir var/demo/b/data spanner bolt list")
        print("vigocli --data-dir var/demo/b/data spanner bolt show a --json   # a2's addresses")
        print("vigocli --data-dir var/demo/a2/data envoys list     # every bolt's envoys")
        print("vigocli --data-dir var/demo/b/data spanner bolt remove c   # then c is out for good")
        print("kill -9 %d    # bolt b: within ~3 s a and c list it as down"
              % (processes["b"].pid,))
        print("in a browser: %s/spanner  (any user; password: the token in "
              "var/demo/b/data/admin-token)" % (runs["b"]["api_url"],))
        print("logs: var/demo/{a,a2,b,c}/server.log")
        if args.no_wait:
            return
        print("\nThe bolts keep running; Ctrl-C stops them.", flush=True)
        for process in processes.values():
            process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
