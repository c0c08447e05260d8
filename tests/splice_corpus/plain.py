def target(x, y=2, *args, z=3, **kw):
    total = x + y + z
    for a in args:
        total += a
    return total, sorted(kw)
