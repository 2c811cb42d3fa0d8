"""The PyTorch side of compare.py: one measurement per process, one line of JSON.

  torch_run.py model <seed|resnet> <train|infer> <threads> [seconds] [data dir] [--bf16]
  torch_run.py conv <in> <out> <size> <kernel> <stride> <threads> [seconds] [--no-mkldnn]
"""
import contextlib
import gzip
import json
import os
import sys
import time

import torch

from models import build

BATCH = 128


def load_images(directory):
    """The 60000 training images scaled to [0, 1] and their labels, or None without the data."""
    try:
        with gzip.open(os.path.join(directory, "train-images-idx3-ubyte.gz")) as f:
            x = torch.frombuffer(bytearray(f.read()[16:]), dtype=torch.uint8)
        with gzip.open(os.path.join(directory, "train-labels-idx1-ubyte.gz")) as f:
            y = torch.frombuffer(bytearray(f.read()[8:]), dtype=torch.uint8)
    except OSError:
        return None
    return x.reshape(-1, 1, 28, 28).float() / 255.0, y.long()


def time_loop(budget, once):
    once()
    once()
    calls, t0 = 0, time.perf_counter()
    while True:
        once()
        calls += 1
        if time.perf_counter() - t0 >= budget:
            return calls, time.perf_counter() - t0


def model_main(name, mode, threads, budget, directory, bf16=False):
    """--bf16: the model runs under torch.autocast(bfloat16) (oneDNN's AMX kernels where the CPU
    has them), the counterpart of minires' MatmulPrecision::BF16."""
    torch.manual_seed(1)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else \
        contextlib.nullcontext
    model, opt = build(name)
    loss_fn = torch.nn.CrossEntropyLoss()
    data = load_images(directory)
    if data is None:
        xs, ys = torch.rand(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
        batches = 1
    else:
        xs, ys = data
        batches = len(ys) // BATCH
    state = {"b": 0}

    def batch():
        b = state["b"]
        state["b"] = (b + 1) % batches
        return xs[b * BATCH:(b + 1) * BATCH], ys[b * BATCH:(b + 1) * BATCH]

    if mode == "train":
        model.train()

        def once():
            x, y = batch()
            opt.zero_grad(set_to_none=True)
            with autocast():
                out = model(x)
            loss_fn(out.float(), y).backward()
            opt.step()
    elif mode == "infer":
        model.eval()

        def once():
            x, _ = batch()
            with torch.no_grad(), autocast():
                model(x)
    else:
        raise ValueError("mode must be train or infer")
    calls, s = time_loop(budget, once)
    print(json.dumps({"system": "pytorch" + ("-bf16" if bf16 else ""), "model": name, "mode": mode, "threads": threads,
                      "data": "noise" if data is None else "fashion-mnist", "batches": calls,
                      "images_per_s": round(calls * BATCH / s, 1)}))


def conv_main(cin, cout, size, kernel, stride, threads, budget, mkldnn):
    torch.backends.mkldnn.enabled = mkldnn
    torch.manual_seed(1)
    # 'same' for odd kernels: padding k // 2 gives Keras' output size at strides 1 and 2 (the
    # split of an odd total padding differs, the work does not).
    conv = torch.nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    x = torch.empty(BATCH, cin, size, size).uniform_(-1, 1).requires_grad_()
    out = -(-size // stride)
    dy = torch.empty(BATCH, cout, out, out).uniform_(-1, 1)

    def once():
        x.grad = None
        conv.weight.grad = None
        conv(x).backward(dy)

    calls, s = time_loop(budget, once)
    flop = 3 * 2 * BATCH * cout * cin * kernel * kernel * out * out
    print(json.dumps({"system": "pytorch" + ("" if mkldnn else "-im2col"),
                      "conv": f"{cin}->{cout} {kernel}x{kernel} s{stride} @{size}",
                      "threads": threads,
                      "calls": calls, "ms": round(1e3 * s / calls, 3),
                      "gflops": round(flop * calls / s * 1e-9, 1)}))


def main(argv):
    if len(argv) >= 4 and argv[0] == "model":
        threads = int(argv[3])
        torch.set_num_threads(threads)
        rest = [a for a in argv[4:] if a != "--bf16"]
        model_main(argv[1], argv[2], threads, float(rest[0]) if rest else 5.0,
                   rest[1] if len(rest) > 1 else "/usr/share/datasets/fashion-mnist",
                   "--bf16" in argv)
    elif len(argv) >= 7 and argv[0] == "conv":
        threads = int(argv[6])
        torch.set_num_threads(threads)
        rest = [a for a in argv[7:] if a != "--no-mkldnn"]
        conv_main(int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5]), threads,
                  float(rest[0]) if rest else 2.0, "--no-mkldnn" not in argv)
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
