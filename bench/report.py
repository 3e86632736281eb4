"""Write benchmark figures into docs/benchmarks.md, each bench its own section.

A section lives between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``; a
run replaces its own section and leaves the rest of the page alone.
"""

import json
import os


def replace_section(path, name, text):
    begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
    page = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    block = "%s\n%s\n%s" % (begin, text.strip(), end)
    if begin in page and end in page:
        head, rest = page.split(begin, 1)
        page = head + block + rest.split(end, 1)[1]
    else:
        page = page.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(page)


def _ok(value, target, lower_is_better=True):
    if value is None:
        return "not reached"
    good = value <= target if lower_is_better else value >= target
    return "met" if good else "**missed**"


def write_checkin(figures, path):
    m = figures["micro"]
    rows = []
    for run in figures["load"]:
        rows.append(
            "| %d envoys every %g s | %.0f | %.1f / %.1f | %.0f us (%.2f x %.0f us) | %.1f KB | %d / %d |"
            % (run["envoys"], run["interval_s"], run["server_checkins_per_s"], run["p50_ms"],
               run["p99_ms"], run["server_cpu_per_checkin_us"],
               run["ratio_to_cryptography_verify"], run["cryptography_verify_us"],
               run["rss_per_envoy_kb"], run["refusals"],
               run["errors"]))
    sustained = [r for r in figures["load"] if r["p99_ms"] < 100 and not r["errors"]]
    best = max(sustained, key=lambda r: r["server_checkins_per_s"]) if sustained else None
    # The headline CPU and memory figures are read at the target rate
    # (3,333/s: 50,000 envoys at 15 s); every load is in the table below.
    main = min(figures["load"], key=lambda r: abs(r["server_checkins_per_s"] - 3333))
    storm = figures["storm"]
    storm_s = storm["restart_to_all_attached_s"]
    text = """## Envoy check-ins (one standalone server)

`make bench` (`python bench/checkin.py`), %(date)s, %(machine)s. Server and
simulators share the same 2 cores; simulated envoys offer X25519 only unless
noted. Raw figures: `bench/results/checkin.json`.

| figure | ours | target | Vigo (Go, published) |
|---|---|---|---|
| server CPU per signed no-change check-in over held TLS, / one `cryptography` verify (at %(main_rate).0f/s) | **%(ratio).2f** (%(cpu).0f us vs %(cv).0f us) | <= 1.25 (%(ratio_ok)s) | 0.80 ms per unary check-in |
| in-process no-change path (`Fleet.checkin`) | %(path).0f us (PyNaCl verify alone: %(nv).0f us) | -- | ~55 us (verify 52.5 us) |
| framing a check-in and its answer, in process (`bench/framing.py`) | %(chf).1f us (AMP: %(ampf).1f us) | -- | -- |
| sustained check-ins/s with p99 < 100 ms | **%(rate)s** = %(envoys)s envoys at 15 s | >= 3,333/s = 50,000 envoys (%(rate_ok)s) | ~15,000 envoys on 4 vCPU |
| resident memory per held envoy (X25519 clients) | **%(rss).1f KB** | <= 40 KB (%(rss_ok)s) | ~623 KB per held stream |
| the same, clients offering hybrid X25519MLKEM768 | %(hybrid).1f KB | -- | -- |
| reconnect storm: server restart to all %(storm_n)d envoys re-attached | **%(storm_s)s** (ready %(ready).1f s + re-attach %(reattach)s) | 10,000 within 20 s (%(storm_ok)s) | -- |

| load | server check-ins/s | p50 / p99 ms | server CPU per check-in (x verify) | memory per envoy | refusals / errors |
|---|---|---|---|---|---|
%(rows)s
""" % {
        "date": figures["date"], "machine": figures["machine"],
        "main_rate": main["server_checkins_per_s"],
        "ratio": main["ratio_to_cryptography_verify"], "cpu": main["server_cpu_per_checkin_us"],
        "cv": main["cryptography_verify_us"], "nv": m["pynacl_verify_us"],
        "ratio_ok": _ok(main["ratio_to_cryptography_verify"], 1.25),
        "path": m["in_process_checkin_us"],
        "chf": m["channel_framing_us"], "ampf": m["amp_framing_us"],
        "rate": "%.0f/s" % best["server_checkins_per_s"] if best else "none",
        "envoys": "{:,}".format(int(best["server_checkins_per_s"] * 15)) if best else "0",
        "rate_ok": _ok(best["server_checkins_per_s"] if best else None, 3333, False),
        "rss": main["rss_per_envoy_kb"], "rss_ok": _ok(main["rss_per_envoy_kb"], 40),
        "hybrid": figures["hybrid_rss_per_envoy_kb"],
        "storm_n": storm["envoys"],
        "storm_s": "%.1f s" % storm_s if storm_s is not None else "not all re-attached",
        "ready": storm["restart_to_ready_s"],
        "reattach": "%.1f s" % storm["ready_to_all_attached_s"]
        if storm["ready_to_all_attached_s"] is not None else "--",
        "storm_ok": _ok(storm_s, 20),
        "rows": "\n".join(rows),
    }
    replace_section(path, "checkin", text)
    results = os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, "checkin.json"), "w") as f:
        json.dump(figures, f, indent=2)
