"""Export a trained stage for serving: `python -m pdjax.export STAGE_DIR OUT`.

Writes OUT/model.jax (a serialized `jax.export` of the evaluation forward pass: uint8 NHWC
images of any batch size -> logits, normalisation inside, masks folded in; lowered for CPU,
CUDA and TPU) and OUT/model.json. See `pdjax.artifacts`. A directory that is not a finished
stage is refused with one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pdjax import artifacts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pdjax.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", help="a finished stage directory (teacher/, pruning/round_02/, student_.../)")
    parser.add_argument("out", help="the directory to write model.jax and model.json to")
    parser.add_argument("--platforms", default="cpu,cuda,tpu", help="comma-separated lowering platforms")
    parser.add_argument("--onnx", action="store_true", help="also write OUT/model.onnx (needs the onnx extra)")
    args = parser.parse_args(argv)
    try:
        out = artifacts.export(args.stage, args.out, platforms=tuple(p for p in args.platforms.split(",") if p))
        if args.onnx:
            artifacts.export_onnx(args.stage, args.out)
    except (artifacts.StageError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.stage} to {out / artifacts.EXPORT_FILE} ({', '.join(args.platforms.split(','))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
