#!/usr/bin/env python3
"""bench/soak_report.py OUT_DIR PNG — the soak's plot, summary and verdict.

Reads OUT_DIR/soak.csv (host samples; the last row is taken after the load stopped),
soak-driver.json, soak-verify.json and soak-swaps.csv; writes OUT_DIR/soak-summary.json,
plots PNG (when matplotlib is there) and prints the verdict. Exits 1 when the run is
not flat or an acknowledged write is missing.

Flat: the mean of the last three samples under load is within the tolerance of the
early plateau (the samples between 25 % and 50 % of the run, after the sessions ramp).
"""
import csv
import json
import statistics
import sys
from pathlib import Path

# (column, relative tolerance, absolute slack) per measure.
TOLERANCE = {
    "host_rss_kib": (0.15, 8 * 1024),
    "host_fds": (0.15, 64),
    "worker_rss_sum_kib": (0.20, 16 * 1024),
    "worker_rss_max_kib": (0.20, 4 * 1024),
}


def slope_per_min(points):
    """Least-squares slope of (t_s, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    mt = statistics.mean(t for t, _ in points)
    mv = statistics.mean(v for _, v in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if den == 0 else 60 * sum((t - mt) * (v - mv) for t, v in points) / den


def load_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def main():
    out, png = Path(sys.argv[1]), sys.argv[2]
    rows = [
        {k: float(v) for k, v in r.items()}
        for r in csv.DictReader(open(out / "soak.csv"))
    ]
    if len(rows) < 5:
        print("verdict: too few samples", file=sys.stderr)
        return 1
    under_load, after = rows[:-1], rows[-1]
    end_t = under_load[-1]["t_s"]
    plateau = [r for r in under_load if 0.25 * end_t <= r["t_s"] <= 0.5 * end_t] or under_load[1:3]
    tail = under_load[-3:]
    checks = {}
    for col, (rel, slack) in TOLERANCE.items():
        early = statistics.mean(r[col] for r in plateau)
        late = statistics.mean(r[col] for r in tail)
        limit = early * (1 + rel) + slack
        checks[col] = {
            "start": rows[0][col],
            "plateau": round(early),
            "end": round(late),
            "after_load": after[col],
            "limit": round(limit),
            # growth after the plateau starts, per minute: small but steady shows here
            "slope_per_min": round(
                slope_per_min([(r["t_s"], r[col]) for r in under_load if r["t_s"] >= plateau[0]["t_s"]]), 1
            ),
            "flat": late <= limit,
        }
    driver = load_json(out / "soak-driver.json")
    verify = load_json(out / "soak-verify.json")
    swaps = list(csv.reader(open(out / "soak-swaps.csv")))
    swaps = [s for s in swaps if s and s[0].isdigit()]
    flat = all(c["flat"] for c in checks.values())
    writes_ok = (
        verify.get("writes_acknowledged", 0) > 0
        and verify.get("writes_missing", 1) == 0
    )
    summary = {
        "samples": len(rows),
        "seconds": rows[-1]["t_s"],
        "checks": checks,
        "workers_max": max(r["workers"] for r in rows),
        "driver": driver,
        "verify": verify,
        "hot_swaps": len(swaps),
        "hot_swaps_seen": sum(1 for s in swaps if s[1] == "yes"),
        "flat": flat,
        "writes_ok": writes_ok,
    }
    (out / "soak-summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = [r["t_s"] / 60 for r in rows]
        fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
        axes[0].plot(t, [r["host_rss_kib"] / 1024 for r in rows], marker="o")
        axes[0].set_ylabel("host RSS (MiB)")
        axes[1].plot(t, [r["host_fds"] for r in rows], marker="o", color="tab:orange")
        axes[1].set_ylabel("host fds")
        wrows = list(csv.DictReader(open(out / "soak-workers.csv")))
        by_pid = {}
        for w in wrows:
            by_pid.setdefault(w["pid"], []).append((float(w["t_s"]) / 60, float(w["rss_kib"]) / 1024))
        for pid, pts in sorted(by_pid.items()):
            axes[2].plot([p[0] for p in pts], [p[1] for p in pts], marker=".", linewidth=1)
        axes[2].set_ylabel("worker RSS (MiB)\none line per worker")
        axes[2].set_xlabel("minutes (last point: after the load stopped)")
        for ax in axes:
            ax.axvline(end_t / 60, color="grey", linestyle=":", linewidth=1)
            ax.grid(alpha=0.3)
        fig.suptitle(
            f"mimhost soak: {driver.get('session_slots', '?')} session slots, "
            f"{verify.get('writes_verified', '?')}/{verify.get('writes_acknowledged', '?')} writes verified"
        )
        fig.tight_layout()
        fig.savefig(png, dpi=90)
        print(f"plot: {png}", file=sys.stderr)
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)

    for col, c in checks.items():
        print(
            f"{col:20} start {c['start']:>10.0f}  plateau {c['plateau']:>10}  end {c['end']:>10}"
            f"  after {c['after_load']:>10.0f}  limit {c['limit']:>10}  slope/min {c['slope_per_min']:>8}"
            f"  {'flat' if c['flat'] else 'GROWING'}"
        )
        if c["slope_per_min"] > 0.01 * max(c["plateau"], 1):
            print(f"  note: {col} still grows {c['slope_per_min']:.0f}/min after the plateau (>1 %/min)")
    print(
        f"writes: {verify.get('writes_acknowledged')} acknowledged, {verify.get('writes_verified')} verified"
        f"; hot swaps seen {summary['hot_swaps_seen']}/{summary['hot_swaps']}; runaway {driver.get('runaway')}"
    )
    print(f"verdict: {'PASS' if flat and writes_ok else 'FAIL'} (flat={flat}, writes_ok={writes_ok})")
    return 0 if flat and writes_ok else 1


if __name__ == "__main__":
    sys.exit(main())
