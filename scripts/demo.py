"""``make demo``: a standalone vigosrv with a few hundred simulated envoys.

Starts ``twistd -n vigo`` on loopback with its data under ./var/demo, mints an
enrollment token, enrolls simulated envoys that check in over TLS, force-pushes
one, shows the fleet, then keeps the server running and says where to look.
Ctrl-C stops it. (When the spanner federation lands, this becomes a 3-bolt demo.)
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
DEMO = os.path.join(ROOT, "var", "demo")


def port_or_free(preferred):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted listens
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(text):
    print("\n\033[1m==> %s\033[0m" % (text,), flush=True)


def show(*argv):
    print("$ " + " ".join(argv[:1] + tuple(a for a in argv[1:])), flush=True)
    subprocess.run([os.path.join(BIN, argv[0])] + list(argv[1:]), check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envoys", type=int, default=300)
    parser.add_argument("--no-wait", action="store_true", help="stop the server at the end")
    args = parser.parse_args()

    shutil.rmtree(DEMO, ignore_errors=True)
    os.makedirs(DEMO)
    data_dir = os.path.join(DEMO, "data")
    config = os.path.join(DEMO, "server.yaml")
    envoy_port, api_port = port_or_free(1530), port_or_free(8443)
    with open(config, "w") as f:
        f.write(
            "server:\n  data_dir: data\n  hostname: localhost\n"
            '  envoy_listen: "127.0.0.1:%d"\n  api_listen: "127.0.0.1:%d"\n'
            "checkin:\n  interval: 5s\nhostcrates: %s\n"
            % (envoy_port, api_port, os.path.join(ROOT, "etc", "hostcrates.yaml"))
        )

    say("starting vigosrv: twistd -n vigo --config %s" % (os.path.relpath(config),))
    log = open(os.path.join(DEMO, "server.log"), "wb")
    server = subprocess.Popen(
        [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "vigo", "--config", config],
        stdout=log, stderr=subprocess.STDOUT, cwd=DEMO)
    try:
        run_file = os.path.join(data_dir, "run.json")
        deadline = time.monotonic() + 60
        while not os.path.exists(run_file):
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit("vigosrv did not start; see %s" % (log.name,))
            time.sleep(0.1)
        with open(run_file) as f:
            run = json.load(f)
        cli = ("vigocli", "--data-dir", data_dir)

        say("the server")
        show(*cli, "status")

        say("minting an enrollment token for %d envoys" % (args.envoys,))
        token = subprocess.run(
            [os.path.join(BIN, "vigocli"), "--data-dir", data_dir, "token", "create",
             "--uses", str(args.envoys)],
            check=True, capture_output=True, text=True).stdout.strip()
        print(token)

        say("%d simulated envoys enroll, then check in every 5 s for 20 s" % (args.envoys,))
        sim = subprocess.Popen(
            [os.path.join(BIN, "vigo-envoy"), "sim", "--server", run["envoy_address"],
             "--token", token, "--count", str(args.envoys), "--interval", "5s",
             "--duration", "20s", "--hostname-template", "web{n}.dc1.example.com"])
        while True:
            status = json.loads(subprocess.run(
                [os.path.join(BIN, "vigocli"), "--data-dir", data_dir, "--json", "status"],
                check=True, capture_output=True, text=True).stdout)
            if status["envoys"]["connected"] >= args.envoys or sim.poll() is not None:
                break
            time.sleep(0.5)

        say("the fleet, while it checks in")
        listing = subprocess.run(
            [os.path.join(BIN, "vigocli"), "--data-dir", data_dir, "envoys", "list"],
            check=True, capture_output=True, text=True).stdout.splitlines()
        print("\n".join(listing[:6] + ["... (%d envoys)" % (len(listing) - 1)]))
        say("force-pushing one envoy down its open connection")
        show(*cli, "envoys", "push", "web1.dc1.example.com")
        time.sleep(1)
        show(*cli, "envoys", "show", "web1.dc1.example.com")

        say("the simulator's summary")
        sim.wait()
        show(*cli, "status")

        say("where to look")
        print("API:      %s  (token: %s)" % (run["api_url"], os.path.join(data_dir, "admin-token")))
        print("metrics:  curl -k %s/metrics" % (run["api_url"],))
        print("CLI:      .venv/bin/vigocli --data-dir %s envoys list" % (os.path.relpath(data_dir),))
        print("log:      %s" % (os.path.relpath(log.name),))
        if args.no_wait:
            return
        print("\nvigosrv keeps running; Ctrl-C stops it.", flush=True)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
