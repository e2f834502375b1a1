"""Where the CPU train step loses to PyTorch: one 3x3 convolution at a time, forward, input
gradient (dX) and weight gradient (dW), XLA beside PyTorch (oneDNN), and the im2col + matmul
form of the same convolution.

    python benchmarks/conv_forms.py            # VGG layer shapes at batch 128

GFLOP/s = 2 * batch * H * W * 9 * Cin * Cout / time for each of the three products.
"""

from __future__ import annotations

import argparse
import importlib.util

from _common import environment, jax_matmul_peak, median_seconds, table

import jax

from pdjax.layers import conv_as_matmul

# (map size, Cin, Cout) of VGG11/VGG19's 3x3 convolutions on 32x32 inputs.
SHAPES = ((32, 64, 64), (16, 64, 128), (16, 128, 128), (8, 128, 256), (8, 256, 256), (4, 256, 512),
          (4, 512, 512), (2, 512, 512))


def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def xla_times(batch, hw, cin, cout, repeats):
    x = jax.random.normal(jax.random.key(0), (batch, hw, hw, cin))
    k = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) * 0.05
    g = jax.random.normal(jax.random.key(2), (batch, hw, hw, cout))
    fns = {
        "fwd": (jax.jit(conv), (x, k)),
        "dX": (jax.jit(lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)), (x, k, g)),
        "dW": (jax.jit(lambda x, k, g: jax.vjp(lambda k: conv(x, k), k)[1](g)), (x, k, g)),
        "im2col fwd+dX+dW": (jax.jit(lambda x, k, g: jax.vjp(lambda x, k: conv_as_matmul(x, k, (1, 1)), x, k)[1](g)),
                             (x, k, g)),
    }
    return {name: median_seconds(lambda: jax.block_until_ready(f(*a)), repeats=repeats)
            for name, (f, a) in fns.items()}


def torch_times(batch, hw, cin, cout, repeats):
    import torch
    import torch.nn.functional as F

    x = torch.randn(batch, cin, hw, hw, requires_grad=True)
    w = (torch.randn(cout, cin, 3, 3) * 0.05).requires_grad_()
    g = torch.randn(batch, cout, hw, hw)
    y = F.conv2d(x, w, padding=1)
    return {"fwd": median_seconds(lambda: F.conv2d(x, w, padding=1), repeats=repeats),
            "dX": median_seconds(lambda: torch.autograd.grad(y, x, g, retain_graph=True), repeats=repeats),
            "dW": median_seconds(lambda: torch.autograd.grad(y, w, g, retain_graph=True), repeats=repeats)}


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    use_torch = importlib.util.find_spec("torch") is not None
    rows = []
    for hw, cin, cout in SHAPES:
        flops = 2 * args.batch * hw * hw * 9 * cin * cout
        ours = xla_times(args.batch, hw, cin, cout, args.repeats)
        theirs = torch_times(args.batch, hw, cin, cout, args.repeats) if use_torch else {}
        row = {"map": f"{hw}x{hw}", "Cin->Cout": f"{cin}->{cout}"}
        for part in ("fwd", "dX", "dW"):
            row[f"XLA {part} ms (GFLOP/s)"] = f"{ours[part] * 1e3:.0f} ({flops / ours[part] / 1e9:.0f})"
            if use_torch:
                row[f"PyTorch {part} ms (GFLOP/s)"] = f"{theirs[part] * 1e3:.0f} ({flops / theirs[part] / 1e9:.0f})"
        row["XLA fwd+dX+dW ms"] = f"{(ours['fwd'] + ours['dX'] + ours['dW']) * 1e3:.0f}"
        row["im2col+matmul fwd+dX+dW ms"] = f"{ours['im2col fwd+dX+dW'] * 1e3:.0f}"
        if use_torch:
            row["PyTorch fwd+dX+dW ms"] = f"{(theirs['fwd'] + theirs['dX'] + theirs['dW']) * 1e3:.0f}"
        rows.append(row)
        print(row, flush=True)
    text = (f"Environment: {environment()}; f32 matmul peak {jax_matmul_peak() / 1e9:.0f} GFLOP/s\n"
            + table(rows, f"One 3x3 convolution, batch {args.batch}: forward, input and weight gradients"))
    print(text)
    return text


if __name__ == "__main__":
    main()
