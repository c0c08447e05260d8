# The loop body shares the `while` line, so no NOP is left at the head: the
# first body instruction is the backward jump's target on every version.
def target(it):
    while True: x = next(it); y = x * 2
