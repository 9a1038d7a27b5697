#!/usr/bin/env python3
"""Helpers for Scripts/bench: run one fio job while sampling a FUSE daemon's
CPU time and context switches, and turn the collected runs into a table.

  benchlib.py run --target T [--phase cold|warm] --job J --rep N --pid PID|0 --out RESULTS.jsonl -- fio ARGS...
  benchlib.py report RESULTS.jsonl OUT.json [--meta META.json]
  benchlib.py json-field FIELD           (reads JSON on stdin, prints one field)
  benchlib.py s3 ensure-bucket ENDPOINT BUCKET
  benchlib.py s3 delete-prefix ENDPOINT BUCKET PREFIX

Runs of object-store targets carry a phase ("cold": first pass after a fresh
mount, "warm": the pass after it); the report shows them as "TARGET PHASE".
S3 credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (boto3).

CPU: utime+stime of the whole process from /proc/PID/stat (the kernel folds
exited threads into it).  Context switches: /proc/PID/status counts only the
thread it names, so the sampler sums /proc/PID/task/*/status over all threads,
polling while fio runs so that threads which exit during the run keep the
last value seen for them.
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.2


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # comm may contain spaces: split after the closing parenthesis.
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def thread_ctx(pid):
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        v = nv = None
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        v = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        nv = int(line.split()[1])
        except OSError:
            continue  # thread exited between listdir and open
        if v is not None and nv is not None:
            out[tid] = (v, nv)
    return out


class Sampler:
    def __init__(self, pid):
        self.pid = pid
        self.cpu0 = proc_cpu_seconds(pid)
        self.start = thread_ctx(pid)
        self.last = dict(self.start)
        self.max_threads = len(self.start)

    def sample(self):
        cur = thread_ctx(self.pid)
        self.last.update(cur)
        self.max_threads = max(self.max_threads, len(cur))

    def finish(self):
        self.sample()
        cpu1 = proc_cpu_seconds(self.pid)
        v = sum(x[0] for x in self.last.values()) - sum(x[0] for x in self.start.values())
        nv = sum(x[1] for x in self.last.values()) - sum(x[1] for x in self.start.values())
        return {
            "cpu_seconds": cpu1 - self.cpu0,
            "voluntary_ctxt_switches": v,
            "nonvoluntary_ctxt_switches": nv,
            "threads_seen": len(self.last),
            "max_threads": self.max_threads,
        }


def children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                data = f.read()
        except OSError:
            continue
        if int(data[data.rindex(")") + 2:].split()[1]) == ppid:
            out.append(int(d))
    return out


def fio_summary(path):
    with open(path) as f:
        text = f.read()
    # fio may print notes before the JSON object.
    text = text[text.index("{"):]
    data = json.loads(text)
    job = data["jobs"][0]
    r, w = job["read"], job["write"]
    ios = r["total_ios"] + w["total_ios"]
    return {
        "error": job.get("error", 0),
        "read_iops": r["iops"],
        "write_iops": w["iops"],
        "iops": r["iops"] + w["iops"],
        "bw_bytes": r["bw_bytes"] + w["bw_bytes"],
        "total_ios": ios,
        "io_bytes": r["io_bytes"] + w["io_bytes"],
        "runtime_ms": max(r["runtime"], w["runtime"]),
        "lat_mean_us": (r["clat_ns"]["mean"] if r["total_ios"] else w["clat_ns"]["mean"]) / 1000.0,
        "usr_cpu": job.get("usr_cpu"),
        "sys_cpu": job.get("sys_cpu"),
    }


def cmd_run(argv):
    import argparse
    p = argparse.ArgumentParser(prog="benchlib.py run")
    p.add_argument("--target", required=True)
    p.add_argument("--phase", default="", help="cold or warm, for object-store targets")
    p.add_argument("--job", required=True)
    p.add_argument("--rep", type=int, required=True)
    p.add_argument("--pid", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--fio-json", required=True)
    p.add_argument("--timeout", type=float, default=0, help="kill fio after this many seconds")
    p.add_argument("fio", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cmd = a.fio[1:] if a.fio and a.fio[0] == "--" else a.fio
    cmd = cmd + ["--output-format=json", f"--output={a.fio_json}"]
    sampler = None
    if a.pid:
        try:
            sampler = Sampler(a.pid)
        except OSError as e:
            print(f"bench: cannot read /proc/{a.pid}: {e}", file=sys.stderr)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)

    def kill_fio():
        # fio forks one process per job and the job calls setsid(), so find
        # the children before stopping the parent: SIGINT lets fio stop its
        # jobs itself; whatever is left after 5 s gets SIGKILL.
        kids = children(proc.pid)
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for pid in [proc.pid] + kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(signum, frame):
        kill_fio()
        proc.wait()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    timed_out = False
    while True:
        try:
            proc.wait(timeout=SAMPLE_INTERVAL)
            break
        except subprocess.TimeoutExpired:
            if a.timeout and time.monotonic() - t0 > a.timeout and not timed_out:
                timed_out = True
                print(f"bench: fio still running after {a.timeout} s; killing it", file=sys.stderr)
                kill_fio()
            if sampler:
                try:
                    sampler.sample()
                except OSError:
                    pass
    wall = time.monotonic() - t0
    stderr = proc.stderr.read()
    daemon = None
    if sampler:
        try:
            daemon = sampler.finish()
        except OSError as e:
            daemon = {"error": f"daemon gone: {e}"}
    rec = {"target": a.target, "phase": a.phase, "job": a.job, "rep": a.rep, "wall_seconds": wall,
           "fio_exit": proc.returncode, "timed_out": timed_out, "fio_stderr": stderr.strip()[-2000:]}
    try:
        rec["fio"] = fio_summary(a.fio_json)
    except (OSError, ValueError, KeyError, IndexError) as e:
        rec["fio"] = None
        rec["parse_error"] = str(e)
    if daemon is not None:
        rec["daemon"] = daemon
        if rec["fio"] and rec["fio"]["total_ios"] and "cpu_seconds" in daemon:
            n = rec["fio"]["total_ios"]
            daemon["cpu_seconds_per_io"] = daemon["cpu_seconds"] / n
            daemon["ctxt_switches_per_io"] = (daemon["voluntary_ctxt_switches"]
                                              + daemon["nonvoluntary_ctxt_switches"]) / n
    ok = proc.returncode == 0 and rec["fio"] is not None and rec["fio"]["error"] == 0
    rec["ok"] = ok
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    f = rec["fio"]
    if f:
        unit = f"{f['iops']:.0f} IOPS" if a.job.startswith("4k") else f"{f['bw_bytes'] / 1e6:.0f} MB/s"
    else:
        unit = "no result"
    extra = ""
    if daemon and "cpu_seconds_per_io" in daemon:
        extra = (f", daemon {daemon['cpu_seconds_per_io'] * 1e6:.1f} us CPU/IO,"
                 f" {daemon['ctxt_switches_per_io']:.2f} cs/IO")
    status = "" if ok else f"  FAILED (fio exit {proc.returncode}): {stderr.strip()[-500:]}"
    print(f"  rep {a.rep} {a.job:<12} {label(rec):<20} {unit}{extra}{status}", flush=True)
    return 0 if ok else 1


JOB_ORDER = ["4k-randread", "4k-randwrite", "4k-snapwrite", "4k-cdpwrite", "1m-read", "1m-write", "1m-cdpwrite"]
JOB_TITLE = {"4k-randread": "4k randread", "4k-randwrite": "4k randwrite", "4k-snapwrite": "4k after snap",
             "4k-cdpwrite": "4k write CDP", "1m-read": "1M seq read", "1m-write": "1M seq write",
             "1m-cdpwrite": "1M write CDP"}


def metric(job, fio):
    # IOPS for 4 KiB jobs, MB/s (10^6 bytes) for 1 MiB jobs.
    return fio["iops"] if job.startswith("4k") else fio["bw_bytes"] / 1e6


def label(run):
    """The row a run belongs to: the target, plus its phase if it has one."""
    return f"{run['target']} {run['phase']}" if run.get("phase") else run["target"]


# Extra ratios, shown when both rows exist: Tessera against the products of
# PERFORMANCE.md, and the two object-store targets against each other.
PAIRS = [("tessera", "qsd"), ("tessera", "s3backer-local"), ("tessera-qos", "tessera"), ("tessera-cache warm", "tessera"),
         ("tessera-s3 cold", "s3backer-s3 cold"), ("tessera-s3 warm", "s3backer-s3 warm")]


def median(xs):
    return statistics.median(xs) if xs else None


def cmd_report(argv):
    import argparse
    p = argparse.ArgumentParser(prog="benchlib.py report")
    p.add_argument("results")
    p.add_argument("out")
    p.add_argument("--meta")
    a = p.parse_args(argv)
    runs = []
    with open(a.results) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    meta = {}
    if a.meta and os.path.exists(a.meta):
        with open(a.meta) as f:
            meta = json.load(f)
    targets = []
    for r in runs:
        r["label"] = label(r)
        if r["label"] not in targets:
            targets.append(r["label"])
    jobs = [j for j in JOB_ORDER if any(r["job"] == j for r in runs)]

    summary = {}
    for t in targets:
        summary[t] = {}
        for j in jobs:
            sel = [r for r in runs if r["label"] == t and r["job"] == j]
            good = [r for r in sel if r["ok"]]
            vals = [metric(j, r["fio"]) for r in good]
            d = {"runs": len(sel), "failed": len(sel) - len(good),
                 "unit": "IOPS" if j.startswith("4k") else "MB/s",
                 "values": vals, "median": median(vals)}
            cpu = [r["daemon"]["cpu_seconds_per_io"] for r in good
                   if r.get("daemon") and "cpu_seconds_per_io" in r["daemon"]]
            cs = [r["daemon"]["ctxt_switches_per_io"] for r in good
                  if r.get("daemon") and "ctxt_switches_per_io" in r["daemon"]]
            if cpu:
                d["daemon_cpu_seconds_per_io"] = median(cpu)
                d["daemon_ctxt_switches_per_io"] = median(cs)
                d["daemon_cpu_cores"] = median([r["daemon"]["cpu_seconds"] / (r["fio"]["runtime_ms"] / 1000.0)
                                                for r in good if r["fio"]["runtime_ms"]])
            summary[t][j] = d

    def ratio(t, base, j):
        a_, b_ = summary[t][j]["median"], summary.get(base, {}).get(j, {}).get("median")
        return a_ / b_ if a_ is not None and b_ else None

    ratios = {}
    for base in ("plain", "passthrough_ll"):
        if base not in summary:
            continue
        for t in targets:
            if t == base or (base == "passthrough_ll" and t == "plain"):
                continue
            ratios[f"{t}/{base}"] = {j: ratio(t, base, j) for j in jobs}
    for t, base in PAIRS:
        if t in summary and base in summary:
            ratios[f"{t}/{base}"] = {j: ratio(t, base, j) for j in jobs}

    cpu_ratio = {}
    if "tessera" in summary and "passthrough_ll" in summary:
        for j in jobs:
            a_ = summary["tessera"][j].get("daemon_cpu_seconds_per_io")
            b_ = summary["passthrough_ll"][j].get("daemon_cpu_seconds_per_io")
            cpu_ratio[j] = a_ / b_ if a_ and b_ else None

    # ---- text table ----
    w0 = max([len("target")] + [len(t) for t in targets] + [len(k) for k in ratios] + [27])
    colw = 14

    def row(label, cells):
        return f"{label:<{w0}}" + "".join(f"{c:>{colw}}" for c in cells)

    def fmt(v, j):
        if v is None:
            return "-"
        return f"{v:,.0f}" if j.startswith("4k") else f"{v:,.0f}"

    lines = []
    rt = meta.get("runtime")
    rp = meta.get("repeat")
    lines.append(f"Medians of {rp} run(s) x {rt} s; 4k columns in IOPS, 1M columns in MB/s"
                 f" (fio libaio, iodepth 16, numjobs 1, direct=1, {meta.get('size', '?')} file)")
    if meta.get("chunk_size"):
        lines.append(f"Tessera chunk size: {meta['chunk_size']}")
    lines.extend(setup_notes(meta, targets))
    lines.append(row("target", [JOB_TITLE[j] for j in jobs]))
    lines.append("-" * (w0 + colw * len(jobs)))
    for t in targets:
        cells = []
        for j in jobs:
            d = summary[t][j]
            c = fmt(d["median"], j)
            if d["failed"]:
                c += f" ({d['failed']}F)"
            cells.append(c)
        lines.append(row(t, cells))
    if (rp or 0) > 1:
        lines.append("")
        lines.append(row("spread (max/min of runs)", [JOB_TITLE[j] for j in jobs]))
        lines.append("-" * (w0 + colw * len(jobs)))
        for t in targets:
            cells = []
            for j in jobs:
                v = summary[t][j]["values"]
                cells.append(f"{max(v) / min(v):.2f}" if len(v) > 1 and min(v) > 0 else "-")
            lines.append(row(t, cells))
    if ratios:
        lines.append("")
        lines.append(row("ratio", [JOB_TITLE[j] for j in jobs]))
        lines.append("-" * (w0 + colw * len(jobs)))
        for k, v in ratios.items():
            lines.append(row(k, ["-" if v[j] is None else f"{v[j]:.2f}x" for j in jobs]))
    if "4k-snapwrite" in jobs and "4k-randwrite" in jobs:
        # The cost of copy-on-write: the same 4k random writes right after a snapshot, against without.
        for t in targets:
            after, before = summary[t]["4k-snapwrite"]["median"], summary[t]["4k-randwrite"]["median"]
            if after and before:
                lines.append(f"{t}: 4k random write right after a snapshot / without one: {after / before:.2f}x")
    for on, off in (("4k-cdpwrite", "4k-randwrite"), ("1m-cdpwrite", "1m-write")):
        if on in jobs and off in jobs:
            # The cost of continuous data protection: the same writes with the volume's CDP journal on.
            for t in targets:
                with_cdp, without = summary[t][on]["median"], summary[t][off]["median"]
                if with_cdp and without:
                    lines.append(f"{t}: {JOB_TITLE[on]} / without CDP: {with_cdp / without:.2f}x")
    daemons = [t for t in targets if any("daemon_cpu_seconds_per_io" in summary[t][j] for j in jobs)]
    if daemons:
        lines.append("")
        lines.append(row("daemon CPU us / I/O", [JOB_TITLE[j] for j in jobs]))
        lines.append("-" * (w0 + colw * len(jobs)))
        for t in daemons:
            lines.append(row(t, [f"{summary[t][j]['daemon_cpu_seconds_per_io'] * 1e6:.1f}"
                                 if "daemon_cpu_seconds_per_io" in summary[t][j] else "-" for j in jobs]))
        if cpu_ratio:
            lines.append(row("tessera/passthrough_ll", ["-" if cpu_ratio[j] is None else f"{cpu_ratio[j]:.2f}x"
                                                        for j in jobs]))
        lines.append("")
        lines.append(row("daemon ctx switches / I/O", [JOB_TITLE[j] for j in jobs]))
        lines.append("-" * (w0 + colw * len(jobs)))
        for t in daemons:
            lines.append(row(t, [f"{summary[t][j]['daemon_ctxt_switches_per_io']:.2f}"
                                 if "daemon_ctxt_switches_per_io" in summary[t][j] else "-" for j in jobs]))
        lines.append("")
        lines.append(row("daemon CPU cores busy", [JOB_TITLE[j] for j in jobs]))
        lines.append("-" * (w0 + colw * len(jobs)))
        for t in daemons:
            lines.append(row(t, [f"{summary[t][j]['daemon_cpu_cores']:.2f}"
                                 if summary[t][j].get("daemon_cpu_cores") is not None else "-" for j in jobs]))
    la = meta.get("loadavg_before"), meta.get("loadavg_after")
    if all(la):
        lines.append("")
        lines.append(f"load average (1 min) before {la[0]}, after {la[1]} on {meta.get('cpus')} CPU(s)"
                     + ("  -- machine busy, figures are noisy" if max(float(x) for x in la) > meta.get("cpus", 1) / 2
                        else ""))
    if meta.get("skipped"):
        lines.append("")
        lines.append("NOT RUN (setup failed):")
        for item in filter(None, meta["skipped"].split("|")):
            lines.append(f"  {item}")
    failed = [r for r in runs if not r["ok"]]
    if failed:
        lines.append("")
        lines.append(f"{len(failed)} run(s) FAILED:")
        for r in failed:
            msg = r.get("fio_stderr") or r.get("parse_error") or ""
            lines.append(f"  {r['target']} {r['job']} rep {r['rep']}: fio exit {r['fio_exit']}: "
                         + msg.replace("\n", " | ")[:300])
    text = "\n".join(lines)
    print(text)

    out = {"meta": meta, "summary": summary, "ratios": ratios,
           "daemon_cpu_ratio_tessera_to_passthrough_ll": cpu_ratio,
           "table": text, "runs": runs}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    return 1 if failed else 0


def setup_notes(meta, targets):
    """One line per non-obvious target setting, for the rows present."""
    present = {t.split(" ")[0] for t in targets}
    notes = []
    if "s3backer-local" in present:
        notes.append(f"s3backer-local: s3backer --test, {meta.get('s3backer_block')} blocks, block cache at its default,"
                     " nodelay_shim preloaded (no simulated per-block latency)")
    if "qsd" in present:
        notes.append(f"qsd: qemu-storage-daemon FUSE export of a raw file, aio={meta.get('qsd_aio')}")
    if present & {"s3backer-s3", "tessera-s3"}:
        notes.append(f"object-store targets: {meta.get('s3')}; {meta.get('s3_size')} file; RAM cache"
                     f" {meta.get('cache_size')} each (s3backer: {meta.get('s3backer_cache_blocks')} blocks of"
                     f" {meta.get('s3backer_block')}); cold = first pass after a fresh mount, warm = again after a full read of the file")
    return notes


def s3_client(endpoint):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=endpoint,
                        region_name=os.environ.get("AWS_REGION", "us-east-1"),
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))


def cmd_s3(argv):
    from botocore.exceptions import BotoCoreError, ClientError
    if len(argv) < 3 or argv[0] not in ("ensure-bucket", "delete-prefix"):
        print("usage: benchlib.py s3 ensure-bucket|delete-prefix ENDPOINT BUCKET [PREFIX]", file=sys.stderr)
        return 64
    action, endpoint, bucket = argv[:3]
    try:
        s3 = s3_client(endpoint)
        if action == "ensure-bucket":
            try:
                s3.head_bucket(Bucket=bucket)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                    raise
                s3.create_bucket(Bucket=bucket)
                print(f"bench: created bucket {bucket} at {endpoint}", file=sys.stderr)
            return 0
        prefix = argv[3]
        if not prefix.strip("/"):
            print("bench: refusing to delete an empty prefix", file=sys.stderr)
            return 64
        deleted = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
        print(f"bench: deleted {deleted} object(s) under s3://{bucket}/{prefix}", file=sys.stderr)
        return 0
    except (BotoCoreError, ClientError) as e:
        print(f"bench: s3 {action} {endpoint} {bucket}: {e}", file=sys.stderr)
        return 1


def cmd_json_field(argv):
    data = json.load(sys.stdin)
    for k in argv[0].split("."):
        data = data[k]
    print(data)
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "run":
        return cmd_run(rest)
    if cmd == "report":
        return cmd_report(rest)
    if cmd == "json-field":
        return cmd_json_field(rest)
    if cmd == "s3":
        return cmd_s3(rest)
    print(f"unknown command {cmd}", file=sys.stderr)
    return 64


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
