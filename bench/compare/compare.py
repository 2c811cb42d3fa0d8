#!/usr/bin/env python3
"""minires against PyTorch's CPU backend, side by side on this machine.

Trains (and runs inference with) the seed model and minires's default ResNet in both libraries,
batch 128 of the same Fashion-MNIST images, at 1 and 2 threads, and times every convolution of
the default ResNet after its stem plus three wider 3x3 shapes (forward + backward) against
PyTorch with oneDNN (and, with --im2col, its own im2col path). Every measurement is a fresh
process; the two systems alternate, so drift of this shared machine hits both; the tables show
medians over the repeats and the ratio of medians. First it measures this machine's FP32 FMA
peak (bench/fma_peak) and gives minires' GFLOP/s as a fraction of it.

  python3 bench/compare/compare.py [--build build/release] [--repeats 3] [--seconds 4]
                                   [--threads 1 2] [--only models|conv|memory] [--im2col]
                                   [--json out.json]

PyTorch runs the fair way for this 2-core setting: torch.set_num_threads(T),
OMP_NUM_THREADS=T, OPENBLAS_NUM_THREADS=1 and OPENBLAS_CORETYPE=SkylakeX. Without PyTorch (Debian: apt-get install
python3-torch) the script says so and exits with status 0.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# (in, out, size, kernel, stride): the default ResNet's convolutions after the stem (3x3 at
# 14x14, 7x7 and 4x4, the stride-2 3x3 into each stage and the strided 1x1 projections), then
# three wider 3x3 shapes.
CONV_SHAPES = [(32, 32, 14, 3, 1), (64, 64, 7, 3, 1), (128, 128, 4, 3, 1),
               (32, 32, 28, 3, 2), (32, 64, 14, 3, 2), (64, 128, 7, 3, 2),
               (32, 32, 28, 1, 2), (32, 64, 14, 1, 2), (64, 128, 7, 1, 2),
               (32, 32, 28, 3, 1), (64, 64, 14, 3, 1), (128, 128, 7, 3, 1)]


def torch_python():
    """An interpreter that can import torch: this one, else Debian's /usr/bin/python3."""
    for exe in [sys.executable, "/usr/bin/python3"]:
        if exe and os.path.exists(exe) and subprocess.run(
                [exe, "-c", "import torch"], capture_output=True).returncode == 0:
            return exe
    return None


def run_json(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def openblas_coretype():
    """The OpenBLAS kernel set for this CPU's SIMD width (None: let OpenBLAS detect it)."""
    flags = cpu_flags()
    if "avx512f" in flags:
        return "SkylakeX"
    if "avx2" in flags and "fma" in flags:
        return "Haswell"
    return None


def env_for(threads):
    env = dict(os.environ)
    # OPENBLAS_CORETYPE: Debian's OpenBLAS 0.3.21 mis-detects some of the project's CPUs and
    # falls back to SSE3 kernels (~5x slower SGEMM), which would handicap PyTorch's im2col path
    # and Linear layers; the core type follows the CPU's SIMD width (SkylakeX kernels would be
    # illegal instructions on an AVX2-only CPU).
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    coretype = openblas_coretype()
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    return env


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs):
    return f"{min(xs):.0f}-{max(xs):.0f}" if xs else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", choices=["models", "conv", "memory"])
    ap.add_argument("--im2col", action="store_true",
                    help="also time PyTorch's im2col path (mkldnn off; slow: ~2 s per call)")
    ap.add_argument("--json", help="also write every measurement to this file")
    args = ap.parse_args()

    py = torch_python()
    if py is None:
        print("compare.py: PyTorch is not installed, nothing to compare against.\n"
              "Install it with: sudo apt-get install python3-torch   (Debian 12, PyTorch 1.13)")
        return 0
    exe = os.path.join(args.build, "bench", "throughput")
    if not os.path.exists(exe):
        print(f"compare.py: {exe} not found; build it first:\n"
              f"  cmake --preset release && cmake --build --preset release --target throughput",
              file=sys.stderr)
        return 1
    torch_run = [py, os.path.join(HERE, "torch_run.py")]
    records = []
    peak = {}
    peak_exe = os.path.join(args.build, "bench", "fma_peak")
    if os.path.exists(peak_exe):
        for t in args.threads:
            rec = run_json([peak_exe, str(t), "2"], env_for(t))
            records.append(rec)
            peak[t] = rec["gflops"]
        print("FP32 FMA peak of this machine (bench/fma_peak): " +
              ", ".join(f"{peak[t]:.0f} GFLOP/s at {t} thread(s)" for t in args.threads) + "\n")

    def of_peak(gflops, t):
        return f"{100 * gflops / peak[t]:.0f}%" if t in peak else "-"

    def pair(mine, theirs, threads, key):
        """Alternates the two commands `repeats` times; returns the lists of `key` values."""
        a, b = [], []
        for r in range(args.repeats):
            order = [(mine, a), (theirs, b)] if r % 2 == 0 else [(theirs, b), (mine, a)]
            for cmd, sink in order:
                rec = run_json(cmd, env_for(threads))
                records.append(rec)
                sink.append(rec[key])
        return a, b

    secs = str(args.seconds)
    if args.only in (None, "models"):
        print("Training and inference, batch 128, images/s (median of "
              f"{args.repeats}; range in brackets)\n")
        print("| model | mode | threads | minires | PyTorch | minires / PyTorch | "
              "minires, of peak |")
        print("|---|---|---|---|---|---|---|")
        for model in ["seed", "resnet"]:
            for mode in ["train", "infer"]:
                for t in args.threads:
                    first = len(records)
                    a, b = pair([exe, "model", model, mode, str(t), secs],
                                torch_run + ["model", model, mode, str(t), secs], t,
                                "images_per_s")
                    gf = median([r["gflops"] for r in records[first:]
                                 if r["system"] == "minires" and "gflops" in r])
                    print(f"| {model} | {mode} | {t} | {median(a):.0f} [{spread(a)}] | "
                          f"{median(b):.0f} [{spread(b)}] | {median(a) / median(b):.2f} | "
                          f"{of_peak(gf, t)} |", flush=True)
    if args.only in (None, "conv"):
        print("\nConvolutions, 'same' padding, no bias, batch 128, forward + backward (input and "
              "weight gradients), milliseconds (median)\n")
        extra = " PyTorch im2col | vs im2col |" if args.im2col else ""
        print("| shape | threads | minires | algorithm | PyTorch oneDNN | vs oneDNN | "
              f"minires, of peak |{extra}")
        print("|---|---|---|---|---|---|---|" + ("---|---|" if args.im2col else ""))
        for cin, cout, s, k, st in CONV_SHAPES:
            for t in args.threads:
                conv_secs = str(max(1.0, args.seconds / 2))
                shape = [str(cin), str(cout), str(s), str(k), str(st)]
                first = len(records)
                a, b = pair([exe, "conv"] + shape + [str(t), conv_secs],
                            torch_run + ["conv"] + shape + [str(t), conv_secs], t, "ms")
                mine = [r for r in records[first:] if r["system"] == "minires"]
                gf = median([r["gflops"] for r in mine])
                row = (f"| {cin}->{cout} {k}x{k} s{st} @{s} | {t} | {median(a):.2f} | "
                       f"{mine[0]['algorithm']} | {median(b):.2f} | {median(b) / median(a):.2f} | "
                       f"{of_peak(gf, t)} |")
                if args.im2col:
                    _, d = pair([exe, "conv"] + shape + [str(t), conv_secs],
                                torch_run + ["conv"] + shape + [str(t), conv_secs,
                                                                "--no-mkldnn"], t, "ms")
                    row += f" {median(d):.2f} | {median(d) / median(a):.2f} |"
                print(row, flush=True)
        print("\n(vs columns: PyTorch time / minires time, so above 1 means minires is faster; "
              "of peak: minires' nominal GFLOP/s over the FMA peak at that thread count)")
    if args.only in (None, "memory") and os.path.exists("/usr/bin/time"):
        print("\nPeak resident memory (/usr/bin/time, maximum resident set size) of a training "
              "process at 2 threads, batch 128; no data set is loaded (one batch of noise), so "
              "the figure is the library, the model and its training state\n")
        print("| model | minires | PyTorch | minires / PyTorch |")
        print("|---|---|---|---|")
        for model in ["seed", "resnet"]:
            rss = {}
            nodata = "/nonexistent-data-dir"
            for name, cmd in [("minires", [exe, "model", model, "train", "2", secs, nodata]),
                              ("pytorch",
                               torch_run + ["model", model, "train", "2", secs, nodata])]:
                out = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M"] + cmd,
                                     env=env_for(2), capture_output=True, text=True)
                if out.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
                kb = [l for l in out.stderr.splitlines() if l.startswith("maxrss_kb=")][-1]
                rss[name] = int(kb.split("=")[1]) / 1024.0
                records.append({"system": name, "model": model, "max_rss_mb": rss[name]})
            print(f"| {model} | {rss['minires']:.0f} MB | {rss['pytorch']:.0f} MB | "
                  f"{rss['minires'] / rss['pytorch']:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
