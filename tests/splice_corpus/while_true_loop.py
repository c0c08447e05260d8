def target(it):
    while True:
        x = next(it, None)
        if x is None:
            return 'done'
        if x < 0:
            break
    return x
