#!/usr/bin/env python3
"""Static stack estimate of a Thumb-2 firmware ELF (a small cargo-call-stack).

    tools/stack-frames.py ELF [ROOT_REGEX] [-v]

Reads `llvm-objdump -d` of the ELF. A function's frame is what its code
pushes (push, vpush, str pre-decrement of sp, sub sp); the call graph comes
from bl/b.w to symbols and from blx rN after movw/movt rN (how opt-level z
calls a function several times). Prints the heaviest call path from each
function matching ROOT_REGEX (default: main) and, with -v, the 30 largest
frames. An estimate: calls through function pointers and trait objects are
not followed and every push is counted once; the stack painting in the
firmware measures the real peak. Needs llvm-objdump.
"""
import bisect
import re
import subprocess
import sys

args = [a for a in sys.argv[1:] if a != "-v"]
if not args:
    sys.exit(__doc__)
elf = args[0]
root = args[1] if len(args) > 1 else "^main$"
dis = subprocess.run(["llvm-objdump", "-d", "--no-show-raw-insn", "-C", elf],
                     capture_output=True, text=True, check=True).stdout

funcs, frame, calls = {}, {}, {}
cur, regs = None, {}
hdr = re.compile(r"^([0-9a-f]+) <(.*)>:$")
ins = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
for line in dis.splitlines():
    m = hdr.match(line)
    if m:
        if m.group(2).startswith("$"):
            continue
        cur = int(m.group(1), 16)
        funcs[cur], frame[cur], calls[cur], regs = m.group(2), 0, set(), {}
        continue
    m = ins.match(line)
    if not m or cur is None:
        continue
    op, a = m.group(2), m.group(3)
    if op in ("push", "push.w"):
        frame[cur] += 4 * len(a.strip("{} ").split(","))
    elif op == "vpush":
        frame[cur] += 8 * len(a.strip("{} ").split(","))
    elif op in ("str", "str.w") and "[sp, #-" in a and a.endswith("!"):
        frame[cur] += int(re.search(r"#-(\d+)", a).group(1))
    elif op in ("sub", "sub.w", "subw") and re.match(r"sp, (sp, )?#", a):
        frame[cur] += int(a.split("#")[-1], 0)
    elif op in ("movw", "mov.w", "mov") and "#" in a:
        try:
            regs[a.split(",")[0]] = int(a.split("#")[-1], 0)
        except ValueError:
            pass
    elif op == "movt" and "#" in a:
        r = a.split(",")[0]
        regs[r] = (regs.get(r, 0) & 0xFFFF) | (int(a.split("#")[-1], 0) << 16)
    elif op in ("bl", "b.w", "b", "blx") and re.match(r"^[0-9a-fx]+ <", a):
        calls[cur].add(int(a.split()[0], 16))
    elif op == "blx" and a in regs:
        calls[cur].add(regs[a] & ~1)

addrs = sorted(funcs)


def owner(a):
    i = bisect.bisect_right(addrs, a) - 1
    return addrs[i] if i >= 0 else None


graph = {f: {owner(c) for c in cs if owner(c) not in (None, f)} for f, cs in calls.items()}
memo = {}


def worst(f, stack=()):
    if f in memo:
        return memo[f]
    best = (0, [])
    for c in graph.get(f, ()):
        if c in stack:
            continue  # recursion: not followed
        w = worst(c, stack + (f,))
        if w[0] > best[0]:
            best = w
    memo[f] = (frame[f] + best[0], [f"{frame[f]:6d}  {funcs[f]}"] + best[1])
    return memo[f]


try:
    for r in (a for a, n in funcs.items() if re.search(root, n)):
        total, path = worst(r)
        print(f"{funcs[r]}: heaviest path {total} bytes")
        for p in path:
            print("  ", p)
    if "-v" in sys.argv:
        print("largest frames:")
        for a in sorted(frame, key=lambda a: -frame[a])[:30]:
            print(f"{frame[a]:6d}  {funcs[a]}")
except BrokenPipeError:
    pass
