#!/usr/bin/env python3
"""`kwctl bench` of policy.wasm next to this workspace's two baselines, with one request.

Scenarios (the same request, create-example-m6g-xlarge, in each):
  accept-all   baseline module that accepts without reading the request
  parse-only   baseline module that parses the ValidationRequest and accepts
  built-in     policy.wasm with no cluster access: the host call is denied, the built-in table answers
  configmap    policy.wasm answered from a replay session (the field-masked ConfigMap of m6g-masked.yml)

kwctl's replay consumes one exchange per host call and answers nothing once the session is used
up (it logs "the list of recorded responses is empty", and the policy then falls back to the
built-in table). A session of one exchange would measure the ConfigMap path only in the first
iteration, so this script writes a session with --exchanges copies of the exchange to a temporary
file, counts the unanswered calls in kwctl's log, and refuses to report a figure if any call went
unanswered.

Prints the mean and median time per `validate` of each scenario and the policy's ratios to both
baselines. Figures are kwctl's (wasmtime, its own host, logs on), not the policy server's.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

ANSI = re.compile(r"\x1b\[[0-9;]*m")
UNIT = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
VALIDATE = re.compile(r"^validate \[(?P<iters>[0-9.]+ ?\w*) iterations")
ELAPSED = re.compile(
    r"elapsed\s+\[min mean max\]:\s+\[(?P<min>[0-9.]+)(?P<umin>\S+) (?P<mean>[0-9.]+)(?P<umean>\S+) "
    r"(?P<max>[0-9.]+)(?P<umax>\S+)\].*med = (?P<med>[0-9.]+)(?P<umed>[^,]+),"
)


def us(value, unit):
    return float(value) * UNIT[unit.strip()]


def bench(args, name, module, extra, env):
    cmd = [args.kwctl, "bench", "--warm-up-time", str(args.warm_up), "--measurement-time",
           str(args.measurement), *extra, "--request-path", args.request, module]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{name}: kwctl bench exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    out = ANSI.sub("", proc.stdout)
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if VALIDATE.match(line.strip()):
            for follow in lines[i + 1:i + 3]:
                m = ELAPSED.search(follow)
                if m:
                    unanswered = proc.stderr.count("the list of recorded responses is empty")
                    return {
                        "iterations": VALIDATE.match(line.strip()).group("iters"),
                        "mean": us(m["mean"], m["umean"]),
                        "median": us(m["med"], m["umed"]),
                        "unanswered": unanswered,
                    }
    sys.exit(f"{name}: cannot find the validate figures in kwctl's output:\n{out}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kwctl", default=os.environ.get("KWCTL", "kwctl"))
    p.add_argument("--policy", required=True, help="annotated policy module")
    p.add_argument("--accept-all", required=True)
    p.add_argument("--parse-only", required=True)
    p.add_argument("--request", default="e2e-tests/fixtures/requests/create-example-m6g-xlarge.json")
    p.add_argument("--session", default="e2e-tests/fixtures/sessions/m6g-masked.yml")
    p.add_argument("--warm-up", type=int, default=1)
    p.add_argument("--measurement", type=int, default=5)
    p.add_argument("--exchanges", type=int, default=100_000,
                   help="copies of the session's exchange (more than kwctl's iterations)")
    args = p.parse_args()

    env = dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")
    with open(args.session, encoding="utf-8") as f:
        exchange = "".join(line for line in f if not line.startswith("#"))
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as many:
        for _ in range(args.exchanges):
            many.write(exchange)
    try:
        results = {
            "accept-all": bench(args, "accept-all", args.accept_all, [], env),
            "parse-only": bench(args, "parse-only", args.parse_only, [], env),
            "built-in": bench(args, "built-in", args.policy, [], env),
            "configmap": bench(args, "configmap", args.policy,
                               ["--allow-context-aware", "--replay-host-capabilities-interactions", many.name], env),
        }
    finally:
        os.unlink(many.name)
    if results["configmap"]["unanswered"]:
        sys.exit(f"configmap: {results['configmap']['unanswered']} host calls went unanswered "
                 f"(session of {args.exchanges} exchanges used up): raise --exchanges")

    print(f"kwctl bench, request {os.path.basename(args.request)}, "
          f"{args.measurement} s measurement per scenario (time per validate)")
    print(f"{'scenario':<12} {'iterations':>12} {'mean µs':>9} {'median µs':>10} "
          f"{'× accept-all':>13} {'× parse-only':>13}")
    base_a = results["accept-all"]["median"]
    base_p = results["parse-only"]["median"]
    for name, r in results.items():
        print(f"{name:<12} {r['iterations']:>12} {r['mean']:>9.1f} {r['median']:>10.1f} "
              f"{r['median'] / base_a:>12.2f}× {r['median'] / base_p:>12.2f}×")
    print(f"configmap: every host call answered from the session "
          f"({args.exchanges} exchanges, {results['configmap']['unanswered']} unanswered)")


if __name__ == "__main__":
    main()
