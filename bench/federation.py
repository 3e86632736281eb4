"""Benchmarks of the spanner federation, one subcommand a figure family.

Targets in ../shared/design/targets.md ("Federation"); figures are printed and
(unless --no-write) recorded, each beside its target, in the "Federation"
section of docs/benchmarks.md. A subcommand run alone replaces its own rows and
keeps the others' last figures (kept in a comment at the end of the section).

  gossip       tier-1 gossip in process (bench/gossip_figures.py): a killed
               bolt marked down by every other bolt (N = 3, 8, 32), false
               downs at 50 % loss and for frozen bolts, datagram size, gossip
               bytes per bolt per second.
  convergence  a roster change (a join) visible and verified on every bolt
               (bench/convergence.py): in process on a fake clock at N = 3,
               16, 64, and with three real twistd bolts.
  snapshot     verify and merge a signed 10,000-row roster snapshot into a
               roster that knows only the founder: on one core, all on the
               calling thread (the old path; target <= 1.5 s), also as a ratio
               to one PyNaCl Ed25519 verify and to the verifies it cannot avoid
               (two a new row: the bolt's own signature and its admission); and
               as a bolt does it now (bench/snapshot_merge.py: opened and merged
               in slices on the reactor, signatures verified in two threads;
               target <= 1.0 s on 2 cores), old and new side by side, with the
               reactor's longest stall; then check-in p99 at a real bolt while
               it pulls and merges such a snapshot, against the quiet window
               before it in the same run (bench/snapshot_load.py; target within
               2x; --no-load skips it).
  peer         peer action round trip over PB and mutual TLS
               (bench/peer_rtt.py, in a subprocess: it runs the global reactor).
  all          every one of the above (about 2 minutes on 2 cores).

Usage: python bench/federation.py {gossip,convergence,snapshot,peer,all} [--quick] [--no-write]
"""

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's vigo, not an installed one

import harness  # noqa: E402
import report  # noqa: E402

ADDRESSES = {"envoy": "10.0.0.1:1530", "api": "10.0.0.1:8443", "peer": "10.0.0.1:1533"}


def signed_roster(n):
    """A roster of ``n`` rows: a founder that admitted every other bolt."""
    from vigo.identity import Identity
    from vigo.spanner.roster.crdt import Roster, RosterParts
    from vigo.spanner.roster.rows import AdmissionRow

    founder = Identity.generate()
    federation_id = "bench"
    rows = [AdmissionRow.found(founder, federation_id, "founder", ADDRESSES, ["*"])]
    for i in range(n - 1):
        bolt = Identity.generate()
        row = AdmissionRow.applicant(bolt, federation_id, "bolt-%d" % i, ADDRESSES,
                                     ["*.b%d.example.com" % i], "t%d" % i, founder.id)
        rows.append(row.countersign(founder))
    roster = Roster(federation_id, founder.id)
    roster.merge(RosterParts(federation_id, founder.id, rows))
    return roster, founder


def verify_us(count=4000):
    """Microseconds per PyNaCl Ed25519 verify, here and now."""
    import nacl.signing
    from nacl.bindings import crypto_sign_open

    key = nacl.signing.SigningKey.generate()
    message = os.urandom(300)
    signature = key.sign(message).signature
    public = bytes(key.verify_key)
    start = time.perf_counter()
    for _ in range(count):
        crypto_sign_open(signature + message, public)
    return (time.perf_counter() - start) / count * 1e6


def snapshot_merge_seconds(n=10000, roster=None, server=None):
    """Seconds to open a signed ``n``-row snapshot and merge it into an empty
    roster that knows only the founder's id (so its key). Building and signing
    the roster is setup, outside the timing."""
    from vigo.identity import Identity
    from vigo.spanner.canonical import canonical
    from vigo.spanner.roster.crdt import Roster
    from vigo.spanner.roster.snapshot import open_snapshot, sign_snapshot

    if roster is None:
        roster, _ = signed_roster(n)
    server = server or Identity.generate()
    body = canonical(sign_snapshot(roster, server, 1_000_000))  # the bytes on the wire
    start = time.perf_counter()
    snapshot = open_snapshot(body, server.public_key, roster.federation_id)
    fresh = Roster(roster.federation_id, roster.founder_id)
    merged = fresh.merge(snapshot.parts)
    elapsed = time.perf_counter() - start
    if merged.rejected or fresh.digest() != roster.digest():
        raise AssertionError("the snapshot did not merge cleanly: %s" % (merged,))
    return elapsed


DOCS = os.path.join(os.path.dirname(HERE), "docs", "benchmarks.md")
SECTION = "federation"
FIGURES_TAG = "<!-- federation-figures "


def _stamp():
    return {"date": datetime.date.today().isoformat(), "machine": harness.machine()}


# -- the figure families -----------------------------------------------------------


def run_snapshot(args):
    from vigo.identity import Identity

    print("snapshot: building and signing a %d-row roster (setup, not timed)" % (args.rows,),
          flush=True)
    roster, _ = signed_roster(args.rows)
    server = Identity.generate()
    times, ratios, verifies = [], [], []
    for _ in range(args.snapshot_repeat):
        # This machine's speed drifts from minute to minute (shared cores), so
        # each run is paired with a verify timing taken right beside it.
        before = verify_us(2000)
        elapsed = snapshot_merge_seconds(args.rows, roster, server)
        verify = (before + verify_us(2000)) / 2
        times.append(elapsed)
        verifies.append(verify)
        ratios.append(elapsed / (verify / 1e6))
    median = statistics.median(times)
    per_verify = statistics.median(ratios)
    verify = statistics.median(verifies)
    figures = {
        "rows": args.rows, "seconds_median": median, "seconds_min": min(times),
        "runs": times, "repeat": len(times), "verify_us": verify, "verifies": per_verify,
        "ratio_to_verify_floor": per_verify / (2 * args.rows),
        "seconds_at_60us_verify": per_verify * 60e-6, **_stamp(),
    }
    print("snapshot: %d rows opened and merged in %.3f s (median of %d, best %.3f s); "
          "target <= 1.5 s" % (args.rows, median, args.snapshot_repeat, min(times)))
    print("  = %.0f PyNaCl verifies (%.1f us each here, median); a new row needs 2: "
          "%.2f x that floor, i.e. %.2f s where a verify costs 60 us"
          % (per_verify, verify, figures["ratio_to_verify_floor"],
             figures["seconds_at_60us_verify"]), flush=True)
    figures["threaded"] = t = threaded_merge(args.rows, args.snapshot_repeat)
    print("snapshot, as a bolt does it now (threads + slices): %.3f s (median of %d, best %.3f "
          "s), old path %.3f s in the same run; target <= 1.0 s on 2 cores"
          % (t["new_s"], t["repeat"], t["new_best_s"], t["old_s"]))
    print("  longest reactor stall: %.1f ms (old path: %.0f ms); two threads verify %.2f x as "
          "fast as one here" % (t["new_stall_ms"], t["old_stall_ms"], t["two_thread_speedup"]),
          flush=True)
    if not args.no_load:
        import snapshot_load

        print("snapshot under load: a real bolt pulls and merges a %d-row snapshot while "
              "%d envoys check in every %g s" % (args.rows, args.envoys, args.interval),
              flush=True)
        figures["load"] = f = snapshot_load.load_run(args.rows, args.envoys, args.interval)
        print("  check-in p99 %.1f ms while it merged (%d check-ins, %.2f s) vs %.1f ms quiet "
              "(%d); %.1f x; target within 2 x"
              % (f["merge_p99_ms"], f["merge_n"], f["merge_s"], f["quiet_p99_ms"], f["quiet_n"],
                 f["merge_p99_ms"] / f["quiet_p99_ms"]))
        print("  of which: opening (%.2f s) and verifying (%.2f s): p99 %.1f ms (%d); merging, "
              "saving and taking in (%.2f s): p99 %.1f ms (%d)"
              % (f["opening_s"], f["verifying_s"], f["checking_p99_ms"], f["checking_n"],
                 f["saving_s"], f["saving_p99_ms"], f["saving_n"]))
    return figures


def threaded_merge(rows, repeat):
    """bench/snapshot_merge.py's figures (it runs a reactor: a subprocess)."""
    command = [sys.executable, os.path.join(HERE, "snapshot_merge.py"), "--rows", str(rows),
               "--repeat", str(max(repeat, 3))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        raise RuntimeError("bench/snapshot_merge.py failed:\n" + result.stdout + result.stderr)
    return json.loads(result.stdout.splitlines()[-1])


def run_gossip(args):
    import gossip_figures

    started = time.perf_counter()
    f = gossip_figures.figures(quick=args.quick)
    print("gossip (tier 1, in process, simulated seconds, 500 ms interval):")
    for n, k in f["kills"].items():
        print("  killed bolt down at every other bolt, N=%-2d: p50 %.2f s, p99 %.2f s "
              "(per observer p50 %.2f s, p99 %.2f s; %d kills); target p50 <= 3, p99 <= 4.5"
              % (n, k["every_p50"], k["every_p99"], k["p50"], k["p99"], k["kills"]))
    loss, frozen = f["false_downs_loss"], f["false_downs_frozen"]
    print("  false downs, N=10, 50 %% loss, 60 s x %d seeds: %d; bolts frozen 2 s x %d: %d; "
          "target 0" % (loss["seeds"], loss["downs"], frozen["freezes"], frozen["downs"]))
    print("  largest datagram: %s; target <= %d bytes" % (", ".join(
        "N=%s %d B" % (n, size) for n, size in f["datagram_bytes"].items()), f["max_datagram"]))
    for n, rate in f["bytes_per_s"].items():
        print("  gossip bytes sent per bolt, N=%s: multicast %.2f KB/s, unicast %.2f KB/s; "
              "target <= %d KB/s" % (n, rate["multicast"] / 1000, rate["unicast"] / 1000,
                                     BYTES_TARGET[int(n)]))
    f = json.loads(json.dumps(f))  # the keys as they will be read back
    f.update(_stamp(), wall_s=time.perf_counter() - started)
    return f


BYTES_TARGET = {10: 15, 40: 50}
CONVERGENCE_TARGET = {3: 1.5, 16: 1.5, 64: 2.0}


def run_convergence(args):
    import convergence

    started = time.perf_counter()
    seeds = 10 if args.quick else 40
    out = {"in_process": {}, **_stamp()}
    for n, trials in ((3, seeds), (16, seeds), (64, max(4, seeds * 3 // 10))):
        f = convergence.in_process(n, range(trials))
        out["in_process"][str(n)] = f
        print("convergence in process, N=%-2d: every bolt verified p50 %.3f s, p99 %.3f s "
              "(%d joins, %.1f pulls a join); target p99 <= %.1f s"
              % (n, f["p50"], f["p99"], f["trials"], f["pulls_per_join"],
                 CONVERGENCE_TARGET[n]), flush=True)
    f = convergence.in_process(16, range(seeds // 2), loss=0.5)
    out["in_process_lossy"] = f
    print("convergence in process, N=16 at 50 %% loss: p50 %.3f s, p99 %.3f s (%d joins)"
          % (f["p50"], f["p99"], f["trials"]), flush=True)
    if not args.no_processes:
        f = convergence.processes(args.joins or (3 if args.quick else 8))
        out["processes"] = f
        print("convergence, 3 real bolts: B verified C's join p50 %.3f s, p99 %.3f s after "
              "the join call (join call p50 %.3f s; %d joins); target p99 <= 1.5 s"
              % (f["p50"], f["p99"], f["join_p50"], f["repeat"]))
    out["wall_s"] = time.perf_counter() - started
    return out


def run_peer(args):
    command = [sys.executable, os.path.join(HERE, "peer_rtt.py"), "--json", "-n", str(args.n)]
    if args.no_write:
        command.append("--no-write")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError("bench/peer_rtt.py failed:\n" + result.stdout + result.stderr)
    figures = json.loads(result.stdout.splitlines()[0])
    figures.update(_stamp())
    print("peer action round trip (PB `ping`, mutual TLS, loopback): p50 %.3f ms, p99 %.3f ms "
          "(%d calls); target p99 <= 20 ms" % (figures["p50_ms"], figures["p99_ms"], figures["n"]))
    return figures


FAMILIES = {"gossip": run_gossip, "convergence": run_convergence, "snapshot": run_snapshot,
            "peer": run_peer}


# -- the Federation section of docs/benchmarks.md ------------------------------------


def read_figures(path=DOCS):
    """The figures recorded by earlier runs (a comment in the section), or {}."""
    try:
        page = open(path).read()
    except OSError:
        return {}
    begin, end = "<!-- %s:begin -->" % SECTION, "<!-- %s:end -->" % SECTION
    if begin not in page or end not in page:
        return {}
    section = page.split(begin, 1)[1].split(end, 1)[0]
    if FIGURES_TAG not in section:
        return {}
    try:
        return json.loads(section.split(FIGURES_TAG, 1)[1].split(" -->", 1)[0])
    except ValueError:
        return {}


def _by_n(mapping):
    """(n, value) pairs in numeric order of n (JSON keys are strings)."""
    return sorted(((str(n), v) for n, v in mapping.items()), key=lambda item: int(item[0]))


def _ok(good):
    return "met" if good else "**missed**"


def _s(value, digits=2):
    return "never" if value is None or value == math.inf else "%.*f s" % (digits, value)


def render(figures):
    """The Federation section: every figure beside its target."""
    rows, missing = [], []
    g = figures.get("gossip")
    if g:
        for n, k in _by_n(g["kills"]):
            rows.append((
                "a killed bolt marked down by every other bolt, N = %s (in process)" % n,
                "p50 **%s**, p99 **%s** (%d kills; per observer p50 %s, p99 %s)"
                % (_s(k["every_p50"]), _s(k["every_p99"]), k["kills"], _s(k["p50"]),
                   _s(k["p99"])),
                "p50 <= 3 s, p99 <= 4.5 s at 500 ms gossip",
                _ok(k["every_p50"] <= 3 and k["every_p99"] <= 4.5)))
        loss, frozen = g["false_downs_loss"], g["false_downs_frozen"]
        rows.append((
            "false \"down\" verdicts, N = 10, 50 %% datagram loss, 60 s (x %d seeds)"
            % loss["seeds"], "**%d**" % loss["downs"], "0 in 60 s at 50 % loss",
            _ok(loss["downs"] == 0)))
        rows.append((
            "false \"down\" verdicts, N = 10, bolts frozen 2 s (%d freezes, one after another)"
            % frozen["freezes"], "**%d**" % frozen["downs"], "0 for a bolt frozen <= 2 s",
            _ok(frozen["downs"] == 0)))
    else:
        missing.append("gossip")
    c = figures.get("convergence")
    if c:
        for n, f in _by_n(c["in_process"]):
            target = CONVERGENCE_TARGET[int(n)]
            rows.append((
                "roster change (a join) visible and verified on every bolt, N = %s (in process, "
                "%g ms pull RTT)" % (n, f["rtt_ms"]),
                "p50 %s, p99 **%s** (%d joins, %.1f pulls a join)"
                % (_s(f["p50"], 3), _s(f["p99"], 3), f["trials"], f["pulls_per_join"]),
                "p99 <= %g s%s" % (target, " (the N = 16 bound)" if int(n) == 3 else ""),
                _ok(f["p99"] <= target)))
        f = c.get("in_process_lossy")
        if f:
            rows.append((
                "the same, N = 16 at 50 % datagram loss (in process)",
                "p50 %s, p99 **%s** (%d joins)" % (_s(f["p50"], 3), _s(f["p99"], 3), f["trials"]),
                "p99 <= 1.5 s", _ok(f["p99"] <= 1.5)))
        f = c.get("processes")
        if f:
            rows.append((
                "the same with 3 real `twistd vigo --mode=spanner` bolts on loopback (multicast "
                "gossip, HTTPS snapshot pulls): from C's join call until B's status digest "
                "equals A's (polled every 50 ms)",
                "p50 %s, p99 **%s** (%d joins; the join call itself p50 %s)%s"
                % (_s(f["p50"], 3), _s(f["p99"], 3), f["repeat"], _s(f["join_p50"], 3),
                   "; %d runs failed to start" % f["errors"] if f.get("errors") else ""),
                "p99 <= 1.5 s (the N = 16 bound)", _ok(f["p99"] <= 1.5)))
    else:
        missing.append("convergence")
    if g:
        sizes = _by_n(g["datagram_bytes"])
        rows.append((
            "tier-1 datagram size, largest sent, N = %s" % " / ".join(n for n, _ in sizes),
            "**%s bytes**" % " / ".join("{:,}".format(v) for _, v in sizes),
            "<= {:,} bytes, always".format(g["max_datagram"]),
            _ok(max(v for _, v in sizes) <= g["max_datagram"])))
        for n, rate in _by_n(g["bytes_per_s"]):
            limit = BYTES_TARGET[int(n)]
            rows.append((
                "gossip bytes sent per bolt per second, N = %s, multicast / unicast" % n,
                "**%.2f / %.2f KB/s**" % (rate["multicast"] / 1000, rate["unicast"] / 1000),
                "<= %d KB/s" % limit,
                _ok(max(rate.values()) <= limit * 1000)))
    s = figures.get("snapshot")
    if s:
        rows.append((
            "open a signed {:,}-row snapshot, verify and merge it into an empty roster "
            "(one core)".format(s["rows"]),
            "**%.2f s** (median of %d, best %.2f s)" % (s["seconds_median"], s["repeat"],
                                                         s["seconds_min"]),
            "<= 1.5 s on one core", _ok(s["seconds_median"] <= 1.5)))
        rows.append((
            "the same, as a ratio to one PyNaCl Ed25519 verify (%.0f us here)" % s["verify_us"],
            "{:,.0f} verifies = {:.2f} x the floor of 2 a row ({:.2f} s at 60 us a verify)".format(
                s["verifies"], s["ratio_to_verify_floor"], s["seconds_at_60us_verify"]),
            "-- (anchor: 116 us per Ed25519 verify here)", "--"))
        t = s.get("threaded")
        if t:
            rows.append((
                "the same as a bolt does it now: opened and merged in slices on the reactor, "
                "signatures verified in 2 threads (`bench/snapshot_merge.py`)",
                "**%.2f s** (median of %d, best %.2f s); the old path above, in the same run: "
                "%.2f s" % (t["new_s"], t["repeat"], t["new_best_s"], t["old_s"]),
                "<= 1.0 s on 2 cores", _ok(t["new_s"] <= 1.0)))
            rows.append((
                "meanwhile: the reactor's longest stall (a 1 ms timer's lateness); two "
                "verifying threads' speed over one's, here and now",
                "%.1f ms (old path: %.0f ms, the whole merge); %.2f x (2.0 = two free cores)"
                % (t["new_stall_ms"], t["old_stall_ms"], t["two_thread_speedup"]),
                "--", "--"))
        f = s.get("load")
        if f:
            ratio = f["merge_p99_ms"] / f["quiet_p99_ms"]
            rows.append((
                "check-in p99 at a real bolt while it pulls, verifies and merges a {:,}-row "
                "snapshot, vs quiet before it, same run ({:,} envoys every {:g} s; "
                "`bench/snapshot_load.py`)".format(f["rows"], f["envoys"], f["interval_s"]),
                "**%.1f ms** while merging (%d check-ins; the merge took %.2f s in the bolt) vs "
                "%.1f ms quiet (%d): **%.1f x**" % (
                    f["merge_p99_ms"], f["merge_n"], f["merge_s"], f["quiet_p99_ms"],
                    f["quiet_n"], ratio),
                "within 2 x of quiet", _ok(ratio <= 2.0)))
            rows.append((
                "the same window split where the bolt's log splits it: opening and verifying the "
                "snapshot / merging it, saving it (the store's thread) and taking it in",
                "p99 %.1f ms over %.2f s (%d check-ins) / p99 %.1f ms over %.2f s (%d)" % (
                    f["checking_p99_ms"], f["opening_s"] + f["verifying_s"], f["checking_n"],
                    f["saving_p99_ms"], f["saving_s"], f["saving_n"]),
                "--", "--"))
    else:
        missing.append("snapshot")
    p = figures.get("peer")
    if p:
        rows.append((
            "peer action round trip (PB `ping` over mutual TLS, loopback, sequential)",
            "p50 %.3f ms, p99 **%.3f ms** (%d calls)" % (p["p50_ms"], p["p99_ms"], p["n"]),
            "p99 <= 20 ms", _ok(p["p99_ms"] <= 20)))
    else:
        missing.append("peer")
    stamps = {(f["date"], f["machine"]) for f in (g, c, s, p) if f}
    if len(stamps) == 1:
        (date, machine), = stamps
        when = "%s, %s" % (date, machine)
    else:
        when = "; ".join("%s %s, %s" % (name, f["date"], f["machine"])
                         for name, f in (("gossip", g), ("convergence", c), ("snapshot", s),
                                         ("peer", p)) if f)
    table = "\n".join("| %s | %s | %s | %s |" % row for row in rows)
    text = """## Federation

`python bench/federation.py all` (each family also alone: `gossip`, `convergence`,
`snapshot`, `peer`), %(when)s. Targets from the design's Federation table.

Gossip and the in-process convergence run on a fake clock with real identities,
real signatures and the real `Gossiper` on the in-memory multicast bus (500 ms
interval): their times are simulated seconds, exact for a seed, and do not drift
with this machine's load. In-process convergence uses real `Roster`s, and tier-2
pulls are the real exchange (`sign_snapshot`, `open_snapshot` against the pinned
key, `Roster.merge`) driven by each bolt's `on_digest_mismatch` under the real
`PullRequests` rate limits, with a 2 ms pull round trip; its clock runs from the
founder admitting the joiner until every bolt's digest equals the founder's. The
real-process figure includes HTTPS, the store and the 50 ms polling. The snapshot
and peer figures are wall-clock times on this machine, whose two cores are shared
with other work: the threaded snapshot figure comes with how much faster two
threads verified than one while it ran. The check-in figure under a merge runs a
real bolt on this checkout; its window runs from the snapshot's last byte sent
until the bolt has merged, persisted and taken it in.

| figure | ours | target | |
|---|---|---|---|
%(table)s

%(load_note)sDrain and federation scale (64 bolts x 5,000 envoys) are measured by
`bench/drain.py` and `bench/scale.py` (their own sections)%(missing)s.

%(tag)s%(json)s -->
""" % {"when": when, "table": table, "tag": FIGURES_TAG, "load_note": LOAD_NOTE if (
        s and s.get("load")) else "",
       "missing": "; not measured in any run so far: " + ", ".join(missing) if missing else "",
       "json": json.dumps(_compact(figures), sort_keys=True, separators=(",", ":"))}
    return text


LOAD_NOTE = """While a bolt opens and verifies a big snapshot, its reactor runs the opening
in slices of about 2 ms and the verifying threads run at a lower priority; the
rest of the merge window is the new rows being written and taken in. Its
stalls come from the store's thread serializing every new row for
`save_roster` (about 90 ms for 10,000 rows, mostly Python, during which the
reactor waits for the GIL at each of its system calls) and from gossip
re-reading a roster of 10,000 bolts when it changes (about 20-30 ms at the
change, and at every gossip tick after it).

"""


def _compact(figures):
    """What ``render`` reads back: raw per-run lists left out, floats rounded."""
    def trim(value):
        if isinstance(value, float):
            return value if math.isinf(value) else round(value, 4)
        if isinstance(value, dict):
            return {k: trim(v) for k, v in value.items() if k not in ("runs", "wall_s")}
        if isinstance(value, list):
            return [trim(v) for v in value]
        return value
    return trim(figures)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    commands = {}
    for name, text in (("gossip", "tier-1 gossip figures, in process"),
                       ("convergence", "roster convergence after a join"),
                       ("snapshot", "verify and merge a signed roster snapshot"),
                       ("peer", "peer action round trip (subprocess)"),
                       ("all", "every federation figure")):
        command = commands[name] = sub.add_parser(name, help=text)
        command.add_argument("--no-write", action="store_true",
                             help="do not update docs/benchmarks.md")
        if name in ("gossip", "convergence", "all"):
            command.add_argument("--quick", action="store_true",
                                 help="fewer seeds and runs (a smoke test)")
        if name == "snapshot":
            command.add_argument("--repeat", dest="snapshot_repeat", type=int, default=3)
        if name in ("snapshot", "all"):
            command.add_argument("--rows", type=int, default=10000)
            command.add_argument("--no-load", action="store_true",
                                 help="skip the real bolt's check-ins during a merge")
            command.add_argument("--envoys", type=int, default=2000,
                                 help="envoys checking in during the merge")
            command.add_argument("--interval", type=float, default=2.0,
                                 help="their check-in interval (s)")
        if name == "all":
            command.add_argument("--snapshot-repeat", type=int, default=3)
        if name in ("convergence", "all"):
            command.add_argument("--no-processes", action="store_true",
                                 help="skip the real-process convergence runs")
            command.add_argument("--joins", type=int, default=0,
                                 help="real-process joins (default 8, 3 with --quick)")
        if name in ("peer", "all"):
            command.add_argument("-n", type=int, default=2000, help="peer round trips to time")
    args = parser.parse_args()
    args.quick = getattr(args, "quick", False)
    names = list(FAMILIES) if args.bench == "all" else [args.bench]
    started = time.perf_counter()
    figures = read_figures()
    for name in names:
        figures[name] = FAMILIES[name](args)
        sys.stdout.flush()
    print("(%.1f s wall)" % (time.perf_counter() - started))
    if not args.no_write:
        report.replace_section(DOCS, SECTION, render(figures))
        print("figures written to docs/benchmarks.md (section %r)" % (SECTION,))


if __name__ == "__main__":
    main()
