#!/usr/bin/env python3
"""Instructions per K step of the GEMM kernels, read from `cuobjdump -sass` on stdin.

For every kernel with tensor-core instructions (HMMA, HGMMA) it finds the innermost loop
holding all of them (a backward branch from after the last to before the first) and
prints its length in instructions: what each thread issues per K step. A main loop that
issues more than the tensor cores take to run a step leaves them idle (the copy loops
with a runtime trip count once made it ~560 a step, ~2.5x the ~200 it is now).

  sass_main_loops.py [PREFIX=MAX ...]   each kernel named PREFIX* (the longest prefix that
                                        matches) may take at most MAX; exit 1 otherwise.
"""
import re
import sys


def main_loops(sass):
    """(kernel, instructions in its main loop or None, tensor-core instructions) per kernel."""
    for block in re.split(r"\n\s*Function : ", sass)[1:]:
        name = block.split()[0]
        code = [(int(a, 16), op) for a, op in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", block)]
        mma = [a for a, op in code if "HMMA" in op or "HGMMA" in op]
        if not mma:
            continue
        loops = []
        for address, op in code:
            target = re.search(r"\bBRA (0x[0-9a-f]+)", op)
            if target and int(target.group(1), 16) <= mma[0] and address >= mma[-1]:
                loops.append((address - int(target.group(1), 16)) // 16 + 1)
        yield name, min(loops) if loops else None, len(mma)


def main():
    budgets = dict(arg.split("=", 1) for arg in sys.argv[1:])
    status = 0
    for name, length, mma in main_loops(sys.stdin.read()):
        prefix = max((p for p in budgets if name.startswith(p)), key=len, default=None)
        verdict = ""
        if prefix is not None:
            limit = int(budgets[prefix])
            if length is None or length > limit:
                verdict, status = f"  OVER the budget of {limit}", 1
            else:
                verdict = f"  (budget {limit})"
        print(f"{name}: {length if length is not None else 'no loop'} instructions a K step, {mma} tensor-core{verdict}")
    return status


if __name__ == "__main__":
    sys.exit(main())
